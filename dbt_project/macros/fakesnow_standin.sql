{#-
  Local stand-in only (switched on when target.account == 'fakesnow', the `local` target).

  fakesnow runs on DuckDB, which cannot create a database/schema-qualified TEMPORARY table; dbt unit
  tests (and incremental models) create their scratch tables as such temporary tables, so on the
  stand-in they are made as plain tables instead (dbt drops them after use). Every other target gets
  exactly what dbt would use without this macro (the global default, which Snowflake does not override).
-#}
{% macro snowflake__get_create_table_as_sql(temporary, relation, sql) -%}
  {%- set temporary = temporary and target.account != 'fakesnow' -%}
  {{ return(default__get_create_table_as_sql(temporary, relation, sql)) }}
{%- endmacro %}
