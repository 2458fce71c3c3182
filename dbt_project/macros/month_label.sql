{#- A DATE as its 'YYYY-MM' month label. -#}
{% macro month_label(date_expression) -%}
  {#- The inner cast is for the stand-in: fakesnow only honours to_char's format for an expression it
      can see is a DATE (on a DATE column it returns 'YYYY-MM-DD'); on Snowflake it is a no-op. -#}
  to_char(cast({{ date_expression }} as date), 'YYYY-MM')
{%- endmacro %}
