-- User labels: over all archived orders before the as-of date, a user is `high` when the
-- user's average order amount is strictly greater than the average amount of all orders (not
-- the average of the users' averages), else `low`. Only users with at least one order.
-- The per-user totals are summed from the per-(month, user) sums of int_orders__monthly_rollup
-- (O(user-months), not O(orders)); sums of integer cents and counts, so exactly what summing the
-- orders themselves gives.
-- Compared exactly, in integer cents, without dividing:
--   user_sum / user_n > all_sum / all_n  <=>  user_sum * all_n > all_sum * user_n   (n > 0)

with

user_months as (

    select * from {{ ref('int_orders__monthly_rollup') }}

    where user_id is not null

),

user_totals as (

    select
        user_id,
        sum(order_count) as order_count,
        sum(amount_cents) as total_amount_cents

    from user_months

    group by user_id

),

all_orders as (

    select
        sum(order_count) as overall_order_count,
        sum(total_amount_cents) as overall_amount_cents

    from user_totals

),

labelled as (

    select
        user_totals.user_id,
        user_totals.order_count,
        user_totals.total_amount_cents,
        all_orders.overall_order_count,
        all_orders.overall_amount_cents,
        case
            when user_totals.total_amount_cents * all_orders.overall_order_count
                > all_orders.overall_amount_cents * user_totals.order_count
                then 'high'
            else 'low'
        end as user_label

    from user_totals

    cross join all_orders

),

final as (

    select
        cast(user_id as number(19, 0)) as user_id,
        cast(user_label as varchar(4)) as user_label,
        {{ divide_cents('total_amount_cents', 'order_count', 6) }} as avg_amount,
        cast(order_count as number(18, 0)) as order_count,
        {{ divide_cents('total_amount_cents', 1, 2) }} as total_amount,
        {{ divide_cents('overall_amount_cents', 'overall_order_count', 6) }} as overall_avg_amount,
        {{ as_of_date() }} as as_of_date

    from labelled

)

select * from final
