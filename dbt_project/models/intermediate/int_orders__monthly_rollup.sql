-- The archived orders before the as-of date, summed per calendar month and user ("user rows"),
-- plus one "month row" per month (user_id null) holding the month's totals and the signature of
-- the archived days it was built from. The heavy aggregation behind the monthly bills, the
-- monthly spending and the user labels, kept incrementally (see macros/incremental_months.sql):
--
--   * a full build (first run, --full-refresh) sums every month with archived orders;
--   * an incremental build sums again only the months whose signature changed since they were
--     built (days archived or re-archived since, days that shrank, the as-of date moving forward
--     or backward) and replaces those months whole (delete+insert on bill_month). A month that
--     no longer has orders is rebuilt as a bare month row with no orders, which the post-hook
--     deletes. A daily run therefore reads one month of orders, not all history.
--
-- It carries no as-of date column: the marts on top stamp it, so no row keeps a stale date.
-- If RAW is dropped and archived again (`ecom generate`), every day gets a new ARCHIVED_AT, so
-- every month's signature changes and the whole rollup is rebuilt or deleted month by month.
-- dbt_invocation_id tells which dbt run last built each month.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='bill_month',
        on_schema_change='fail',
        post_hook="delete from {{ this }} where user_id is null and order_count = 0",
    )
}}

{%- set rebuild_months = none -%}
{%- if is_incremental() -%}
    {%- set rebuild_months = months_to_rebuild(this, ref('int_archive_log__order_month_signatures')) -%}
{%- endif %}

with

month_signatures as (

    select * from {{ ref('int_archive_log__order_month_signatures') }}

),

{%- if rebuild_months is none %}

-- a full build: every month with archived orders before the as-of date
months_to_build as (

    select bill_month, month_signature

    from month_signatures

),

{%- else %}

-- an incremental build: the months whose signature changed (months_to_rebuild)
rebuild_months as (

    {%- for month in rebuild_months %}
    {{ 'union all ' if not loop.first }}select cast('{{ month }}' as date) as bill_month
    {%- else %}
    select bill_month from month_signatures where false
    {%- endfor %}

),

-- with their current signature; null for a month without orders any more: rebuilt empty
months_to_build as (

    select
        rebuild_months.bill_month,
        month_signatures.month_signature

    from rebuild_months

    left join month_signatures
        on rebuild_months.bill_month = month_signatures.bill_month

),

{%- endif %}

orders as (

    select
        user_id,
        cast(date_trunc('month', order_date) as date) as bill_month,
        item_count,
        {{ to_cents('amount') }} as amount_cents

    from {{ ref('int_orders__before_as_of') }}

{%- if rebuild_months is not none %}

    where {{ in_months('order_date', rebuild_months) }}

{%- endif %}

),

user_months as (

    select
        orders.bill_month,
        orders.user_id,
        count(*) as order_count,
        sum(orders.item_count) as units,
        sum(orders.amount_cents) as amount_cents

    from orders

    -- only months the archive log holds orders for (with a consistent RAW, every order's month)
    inner join months_to_build
        on orders.bill_month = months_to_build.bill_month

    group by orders.bill_month, orders.user_id

),

month_totals as (

    select
        months_to_build.bill_month,
        months_to_build.month_signature,
        coalesce(sum(user_months.order_count), 0) as order_count,
        coalesce(sum(user_months.units), 0) as units,
        coalesce(sum(user_months.amount_cents), 0) as amount_cents,
        count(user_months.user_id) as buyer_count

    from months_to_build

    left join user_months
        on months_to_build.bill_month = user_months.bill_month

    group by months_to_build.bill_month, months_to_build.month_signature

),

rolled_up as (

    select
        bill_month,
        user_id,
        order_count,
        units,
        amount_cents,
        1 as buyer_count,
        cast(null as varchar(32)) as month_signature

    from user_months

    union all

    select
        bill_month,
        cast(null as number(19, 0)) as user_id,
        order_count,
        units,
        amount_cents,
        buyer_count,
        month_signature

    from month_totals

),

final as (

    select
        bill_month,
        cast(user_id as number(19, 0)) as user_id,
        cast(order_count as number(18, 0)) as order_count,
        cast(units as number(18, 0)) as units,
        cast(amount_cents as number(38, 0)) as amount_cents,
        cast(buyer_count as number(18, 0)) as buyer_count,
        month_signature,
        cast('{{ invocation_id }}' as varchar(36)) as dbt_invocation_id

    from rolled_up

)

select * from final
