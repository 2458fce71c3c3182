with

source as (

    select * from {{ source('raw', 'express') }}

),

renamed as (

    select

        ---------- ids
        id as express_id,
        order_id,

        ---------- text
        carrier,
        tracking_no,
        lower(status) as express_status,

        ---------- dates and timestamps
        shipped_at,
        delivered_at,
        updated_at,
        order_date,
        archived_at

    from source

)

select * from renamed
