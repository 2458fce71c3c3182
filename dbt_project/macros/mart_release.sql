{#-
  The marts' release record (runner/release.py): one row in <target schema>.MART_RELEASE saying which as-of
  date the marts were last built for, by which dbt invocation, and whether that build passed every test.

  mark_marts_building() is the project's on-run-start hook: every dbt command that can rebuild a table
  (run, build, seed, snapshot, retry; through `ecom` or a plain dbt) first marks the release 'building',
  so marts rebuilt without their tests, or by a build that is killed or fails, are never exported.
  Only `ecom transform` marks it 'passed', after its `dbt build` passed every model and data test.
  `dbt test` and `dbt source freshness` change no table: they leave the release as it is.
  The row is replaced (delete, insert): a kill between the two leaves no row, which is not releasable either.
-#}
{% macro mark_marts_building() -%}
  {%- if execute and flags.WHICH not in ('test', 'freshness', 'snapshot-freshness') -%}
    {%- set release = target.database ~ '.' ~ target.schema ~ '.mart_release' -%}
    create table if not exists {{ release }} (
        as_of_date date,
        state varchar,
        invocation_id varchar,
        started_at timestamp_ntz,
        finished_at timestamp_ntz
    );
    delete from {{ release }};
    insert into {{ release }} (as_of_date, state, invocation_id, started_at)
        select {{ as_of_date() }}, 'building', '{{ invocation_id }}', sysdate();
  {%- endif -%}
{%- endmacro %}
