-- Units sold per item over the business days before the as-of date (var hot_items_window_days, 7):
-- order_date in [as_of - window days, as_of). Only items with at least one order in the window have a row.
-- Reads only the window's days of RAW (a daily run does not scan all history).

with

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

sales_window as (

    select
        dateadd(day, -{{ var('hot_items_window_days') }}, {{ as_of_date() }}) as window_start,
        {{ as_of_date() }} as window_end

),

orders_in_window as (

    select
        orders.item_id,
        orders.item_count,
        sales_window.window_start,
        sales_window.window_end

    from orders

    cross join sales_window

    -- the bounds as constant expressions (not the columns of sales_window), so the warehouse
    -- prunes RAW by order_date at compile time and reads only the window's days
    where
        orders.order_date >= dateadd(day, -{{ var('hot_items_window_days') }}, {{ as_of_date() }})
        and orders.order_date < {{ as_of_date() }}

),

units_per_item as (

    select
        item_id,
        cast(sum(item_count) as number(38, 0)) as units_sold,
        cast(count(*) as number(18, 0)) as order_count,
        window_start,
        window_end

    from orders_in_window

    group by item_id, window_start, window_end

)

select * from units_per_item
