-- Monthly bill per user and calendar month: orders, units and amount, over the archived
-- orders before the as-of date. One row per (user_id, bill_month). A thin copy of the user rows
-- of int_orders__monthly_rollup (kept incrementally), stamped with the as-of date.

with

user_months as (

    select * from {{ ref('int_orders__monthly_rollup') }}

    where user_id is not null

),

final as (

    select
        cast(user_id as number(19, 0)) as user_id,
        bill_month,
        cast({{ month_label('bill_month') }} as varchar(7)) as month,
        cast(order_count as number(18, 0)) as order_count,
        cast(units as number(18, 0)) as units,
        {{ divide_cents('amount_cents', 1, 2) }} as total_amount,
        {{ as_of_date() }} as as_of_date

    from user_months

)

select * from final
