-- Archived orders of the business days before the as-of date: the population of every
-- "as of" computation (monthly bills, user labels). The as-of day itself is excluded.

with

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

before_as_of as (

    select
        order_id,
        user_id,
        item_id,
        item_count,
        amount,
        ordered_at,
        order_date

    from orders

    where order_date < {{ as_of_date() }}

)

select * from before_as_of
