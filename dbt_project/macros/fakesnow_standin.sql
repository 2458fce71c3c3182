{#-
  Local stand-in only (switched on when target.account == 'fakesnow', the `local` target).

  fakesnow runs on DuckDB, which cannot create a database/schema-qualified TEMPORARY table; dbt unit
  tests and incremental models (the scratch table of a delete+insert) create their scratch tables as
  such temporary tables, so on the stand-in they are made as plain tables instead (dbt drops them
  after use). Every other target gets exactly what dbt-snowflake's own create_table_as returns.

  Every table dbt creates goes through create_table_as (dispatched, so the project's
  snowflake__create_table_as comes first); `dbt.snowflake__create_table_as` is the adapter's own.
-#}
{% macro snowflake__create_table_as(temporary, relation, compiled_code, language='sql') -%}
  {%- set temporary = temporary and target.account != 'fakesnow' -%}
  {{ return(dbt.snowflake__create_table_as(temporary, relation, compiled_code, language)) }}
{%- endmacro %}
