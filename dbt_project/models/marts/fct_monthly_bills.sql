-- Monthly bill per user and calendar month: orders, units and amount, over the archived
-- orders before the as-of date. One row per (user_id, bill_month).

with

orders as (

    select * from {{ ref('int_orders__before_as_of') }}

),

orders_by_month as (

    select
        user_id,
        cast(date_trunc('month', order_date) as date) as bill_month,
        item_count,
        {{ to_cents('amount') }} as amount_cents

    from orders

),

monthly_bills as (

    select
        user_id,
        bill_month,
        count(*) as order_count,
        sum(item_count) as units,
        sum(amount_cents) as total_amount_cents

    from orders_by_month

    group by user_id, bill_month

),

final as (

    select
        cast(user_id as number(19, 0)) as user_id,
        bill_month,
        cast({{ month_label('bill_month') }} as varchar(7)) as month,
        cast(order_count as number(18, 0)) as order_count,
        cast(units as number(18, 0)) as units,
        {{ divide_cents('total_amount_cents', 1, 2) }} as total_amount,
        {{ as_of_date() }} as as_of_date

    from monthly_bills

)

select * from final
