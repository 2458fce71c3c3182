{#-
  The business day every model is computed "as of", as a Snowflake DATE expression.

  - var `as_of_date` set ('YYYY-MM-DD'): `cast('YYYY-MM-DD' as date)`, so a rerun on the same data
    gives the same answer. A malformed or impossible value (e.g. 'abc', '2026-13-45') stops
    compilation with a clear error instead of reaching the warehouse.
  - var unset (or empty): today in the business time zone (var `business_time_zone`, default UTC).

  A YAML date (unquoted 2026-03-01 in --vars or a unit test's overrides) is accepted as well.
-#}
{% macro as_of_date() -%}
  {%- set raw_value = var('as_of_date', none) -%}
  {%- if raw_value is none or (raw_value | string | trim) == '' -%}
    cast(convert_timezone('{{ var("business_time_zone", "UTC") }}', current_timestamp()) as date)
  {%- else -%}
    cast('{{ parse_as_of_date(raw_value) }}' as date)
  {%- endif -%}
{%- endmacro %}


{#- Validates an as-of value and returns it as a 'YYYY-MM-DD' string, or raises a compiler error. -#}
{% macro parse_as_of_date(raw_value) -%}
  {%- set text = raw_value | string | trim -%}
  {%- set hint = "as_of_date must be a calendar date written YYYY-MM-DD, e.g. --vars '{\"as_of_date\": \"2026-03-01\"}'" -%}
  {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
    {{ exceptions.raise_compiler_error("Invalid as_of_date '" ~ text ~ "': " ~ hint ~ ".") }}
  {%- endif -%}
  {%- set year = text[0:4] | int -%}
  {%- set month = text[5:7] | int -%}
  {%- set day = text[8:10] | int -%}
  {%- if year < 1 or month < 1 or month > 12 -%}
    {{ exceptions.raise_compiler_error("Invalid as_of_date '" ~ text ~ "': no such month. " ~ hint ~ ".") }}
  {%- endif -%}
  {%- set first_of_next_month = modules.datetime.date(year + 1, 1, 1) if month == 12 else modules.datetime.date(year, month + 1, 1) -%}
  {%- set days_in_month = (first_of_next_month - modules.datetime.timedelta(days=1)).day -%}
  {%- if day < 1 or day > days_in_month -%}
    {{ exceptions.raise_compiler_error("Invalid as_of_date '" ~ text ~ "': no such day (" ~ year ~ "-" ~ text[5:7] ~ " has " ~ days_in_month ~ " days). " ~ hint ~ ".") }}
  {%- endif -%}
  {{- text -}}
{%- endmacro %}
