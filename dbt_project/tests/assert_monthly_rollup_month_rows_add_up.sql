-- Each month row of int_orders__monthly_rollup is the sum of the month's user rows (orders, units,
-- amount) and counts them as its buyers; and no user row lacks its month row. Returns the months
-- that disagree (e.g. a month only partly replaced).

with

rollup as (

    select * from {{ ref('int_orders__monthly_rollup') }}

),

month_rows as (

    select bill_month, order_count, units, amount_cents, buyer_count

    from rollup

    where user_id is null

),

summed_user_rows as (

    select
        bill_month,
        sum(order_count) as order_count,
        sum(units) as units,
        sum(amount_cents) as amount_cents,
        count(*) as buyer_count

    from rollup

    where user_id is not null

    group by bill_month

)

select
    coalesce(month_rows.bill_month, summed_user_rows.bill_month) as bill_month,
    month_rows.order_count as month_order_count,
    summed_user_rows.order_count as summed_order_count

from month_rows

full outer join summed_user_rows
    on month_rows.bill_month = summed_user_rows.bill_month

where
    month_rows.bill_month is null
    or summed_user_rows.bill_month is null
    or month_rows.order_count != summed_user_rows.order_count
    or month_rows.units != summed_user_rows.units
    or month_rows.amount_cents != summed_user_rows.amount_cents
    or month_rows.buyer_count != summed_user_rows.buyer_count
