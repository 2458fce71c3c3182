-- Weekly hot items: the items sold in the 7 days before the as-of date, in two price tiers
-- (`high`: price > the average price of all items; `low`: price <= it), ranked within each
-- tier by units sold, ties to the smaller item id; the top var('hot_items_top_n') (10) of each tier are kept.
-- One row per (item_label, item_rank).

with

units_sold as (

    select * from {{ ref('int_items__units_last_7_days') }}

),

price_tiers as (

    select * from {{ ref('int_items__price_tiers') }}

),

sold_items as (

    select
        units_sold.item_id,
        units_sold.units_sold,
        units_sold.window_start,
        units_sold.window_end,
        price_tiers.item_name,
        price_tiers.item_price,
        price_tiers.item_type,
        price_tiers.price_threshold,
        price_tiers.item_label

    from units_sold

    -- an item sold but missing from the items snapshot has no price, hence no tier
    inner join price_tiers
        on units_sold.item_id = price_tiers.item_id

),

ranked as (

    select
        *,
        row_number() over (
            partition by item_label
            order by units_sold desc, item_id asc
        ) as item_rank

    from sold_items

),

final as (

    select
        cast(item_label as varchar(4)) as item_label,
        cast(item_rank as number(2, 0)) as item_rank,
        cast(item_id as number(19, 0)) as item_id,
        cast(units_sold as number(18, 0)) as units_sold,
        item_name,
        cast(item_price as number(10, 2)) as item_price,
        item_type,
        price_threshold,
        window_start,
        window_end,
        {{ as_of_date() }} as as_of_date

    from ranked

    where item_rank <= {{ var('hot_items_top_n') }}

)

select * from final
