{#-
  Money arithmetic. Amounts and prices are NUMBER(x,2), so `amount * 100` is an exact integer:
  sums and comparisons are done on integer cents, which is exact on every engine (the local
  stand-in, DuckDB, turns SUM/AVG/division of decimals into binary floating point).
-#}

{#- An amount column (NUMBER(x,2)) as an integer number of cents. -#}
{% macro to_cents(amount) -%}
  cast({{ amount }} * 100 as number(38, 0))
{%- endmacro %}


{#-
  (cents / divisor) as an amount, rounded half away from zero to `scale` decimals, NUMBER(18, scale);
  null when divisor is 0. The quotient is fixed to NUMBER(38, 6) before rounding, so rounding
  happens in decimal arithmetic on every engine (in binary floating point round(1.005, 2) is 1.0).
-#}
{% macro divide_cents(cents, divisor, scale=2) -%}
  cast(round(cast({{ cents }} / (nullif({{ divisor }}, 0) * 100) as number(38, 6)), {{ scale }}) as number(18, {{ scale }}))
{%- endmacro %}

