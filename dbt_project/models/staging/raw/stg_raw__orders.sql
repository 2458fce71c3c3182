with

source as (

    select * from {{ source('raw', 'orders') }}

),

renamed as (

    select

        ---------- ids
        id as order_id,
        user_id,
        item_id,

        ---------- numerics
        item_count,
        amount,

        ---------- dates and timestamps
        created_at as ordered_at,
        order_date,
        archived_at

    from source

)

select * from renamed
