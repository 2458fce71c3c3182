{#-
  Month-by-month incremental builds (int_orders__monthly_rollup).

  The rollup stores, on one "month row" per month it holds (user_id null), the signature of the
  archived days it was built from (int_archive_log__order_month_signatures). A month must be built
  again exactly when its stored signature differs from the current one: some of its days were
  archived (again) since, or shrank to no orders, or the as-of date moved into or out of it. A month
  the rollup holds that no longer has a signature (no orders before the as-of date any more) differs
  too, and is rebuilt as nothing: its rows are deleted.
-#}

{#-
  The months to build again, as a sorted list of 'YYYY-MM-DD' strings (first days of months):
  every month whose signature in `current` (the signatures as of now) differs from the one stored
  in `built` (the rollup as it is), including months only one side has. Runs a query, so call it
  only when executing; an empty list when not.
-#}
{% macro months_to_rebuild(built, current) -%}
  {%- if not execute -%}
    {{ return([]) }}
  {%- endif -%}
  {%- set query -%}
    select to_char(coalesce(current_months.bill_month, built_months.bill_month), 'YYYY-MM-DD') as bill_month

    from {{ current }} as current_months

    full outer join (

        select bill_month, month_signature

        from {{ built }}

        where user_id is null

    ) as built_months
        on current_months.bill_month = built_months.bill_month

    where current_months.month_signature is distinct from built_months.month_signature

    order by 1
  {%- endset -%}
  {%- set months = [] -%}
  {%- for row in run_query(query).rows -%}
    {%- set month = row[0] | string -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-01$', month) -%}
      {{ exceptions.raise_compiler_error("months_to_rebuild: unexpected month '" ~ month ~ "' in " ~ built) }}
    {%- endif -%}
    {%- do months.append(month) -%}
  {%- endfor -%}
  {{ return(months) }}
{%- endmacro %}


{#-
  A predicate keeping the rows whose DATE `column` falls in one of `months` ('YYYY-MM-DD' first days
  of months); `false` for no months. Written as date ranges with literal bounds (consecutive months
  merged into one range), so Snowflake prunes micro-partitions (and DuckDB row groups) on the
  column instead of reading all history.
-#}
{% macro in_months(column, months) -%}
  {%- set ranges = [] -%}
  {%- for month in months | unique | sort -%}
    {%- set first = modules.datetime.date(month[0:4] | int, month[5:7] | int, 1) -%}
    {%- set next = modules.datetime.date(first.year + 1, 1, 1) if first.month == 12 else modules.datetime.date(first.year, first.month + 1, 1) -%}
    {%- if ranges and ranges[-1][1] == first.isoformat() -%}
      {%- do ranges.append((ranges.pop()[0], next.isoformat())) -%}
    {%- else -%}
      {%- do ranges.append((first.isoformat(), next.isoformat())) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- if ranges | length == 0 -%}
    false
  {%- elif ranges | length == 1 -%}
    ({{ column }} >= cast('{{ ranges[0][0] }}' as date) and {{ column }} < cast('{{ ranges[0][1] }}' as date))
  {%- else -%}
    ({{ column }} >= cast('{{ ranges[0][0] }}' as date) and {{ column }} < cast('{{ ranges[-1][1] }}' as date) and (
    {%- for first, next in ranges %}
      {{ 'or ' if not loop.first }}({{ column }} >= cast('{{ first }}' as date) and {{ column }} < cast('{{ next }}' as date))
    {%- endfor %}
    ))
  {%- endif -%}
{%- endmacro %}
