-- Every item of the items snapshot with its price tier: `high` when its price is strictly
-- greater than the average price over all items, `low` otherwise (a price equal to the average
-- is `low`). Compared exactly, in integer cents: price * n > sum(price) <=> price > avg(price).

with

items as (

    select * from {{ ref('stg_raw__items') }}

),

price_stats as (

    select
        sum({{ to_cents('item_price') }}) as price_sum_cents,
        count(*) as item_total

    from items

),

tiered as (

    select
        items.item_id,
        items.item_name,
        items.item_type,
        items.item_price,
        {{ divide_cents('price_stats.price_sum_cents', 'price_stats.item_total', 6) }} as price_threshold,
        case
            when {{ to_cents('items.item_price') }} * price_stats.item_total > price_stats.price_sum_cents
                then 'high'
            else 'low'
        end as item_label

    from items

    cross join price_stats

)

select * from tiered
