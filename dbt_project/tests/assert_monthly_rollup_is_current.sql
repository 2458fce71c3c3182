-- int_orders__monthly_rollup holds exactly the months with archived orders before the as-of date,
-- each built from the archived days it would be built from now: its month rows' signatures equal
-- the current ones. Returns the months that differ (a stale, missing or extra month).

with

built_months as (

    select bill_month, month_signature

    from {{ ref('int_orders__monthly_rollup') }}

    where user_id is null

),

current_months as (

    select bill_month, month_signature

    from {{ ref('int_archive_log__order_month_signatures') }}

)

select
    coalesce(current_months.bill_month, built_months.bill_month) as bill_month,
    built_months.month_signature as built_signature,
    current_months.month_signature as current_signature

from current_months

full outer join built_months
    on current_months.bill_month = built_months.bill_month

where current_months.month_signature is distinct from built_months.month_signature
