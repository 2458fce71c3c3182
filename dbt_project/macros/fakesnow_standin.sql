{#-
  Local stand-in only (switched on when target.account == 'fakesnow', the `local` target).

  fakesnow runs on DuckDB, which cannot create a database/schema-qualified TEMPORARY table; dbt unit
  tests (and incremental models) create their fixtures as such temporary tables, so on the stand-in
  this makes them plain tables instead. dbt drops them after use. On a real Snowflake account the
  adapter's own macro is used unchanged.
-#}
{% macro snowflake__create_table_temporary_sql(relation, compiled_code) -%}
  {%- if target.account == 'fakesnow' -%}
    create or replace table {{ relation }} as ({{ compiled_code }})
  {%- else -%}
    {{ dbt_snowflake.snowflake__create_table_temporary_sql(relation, compiled_code) }}
  {%- endif -%}
{%- endmacro %}
