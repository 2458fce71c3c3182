-- Monthly spending summary: per calendar month, the total amount, orders, distinct buyers and
-- the average bill per buyer (total / buyers, rounded to 2 decimals), over the same orders as
-- the monthly bills (archived, before the as-of date).

with

bills as (

    select * from {{ ref('fct_monthly_bills') }}

),

monthly_spending as (

    select
        bill_month,
        month,
        sum({{ to_cents('total_amount') }}) as total_amount_cents,
        sum(order_count) as order_count,
        count(distinct user_id) as buyer_count

    from bills

    group by bill_month, month

),

final as (

    select
        bill_month,
        month,
        {{ divide_cents('total_amount_cents', 1, 2) }} as total_amount,
        cast(order_count as number(18, 0)) as order_count,
        cast(buyer_count as number(18, 0)) as buyer_count,
        {{ divide_cents('total_amount_cents', 'buyer_count', 2) }} as avg_bill_per_buyer,
        {{ as_of_date() }} as as_of_date

    from monthly_spending

)

select * from final
