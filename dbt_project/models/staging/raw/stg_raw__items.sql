with

source as (

    select * from {{ source('raw', 'items') }}

),

renamed as (

    select

        ---------- ids
        id as item_id,

        ---------- text
        name as item_name,
        item_type,

        ---------- numerics
        price as item_price,

        ---------- timestamps
        created_at,
        archived_at

    from source

)

select * from renamed
