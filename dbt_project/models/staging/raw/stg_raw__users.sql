with

source as (

    select * from {{ source('raw', 'users') }}

),

renamed as (

    select

        ---------- ids
        id as user_id,

        ---------- text
        name as user_name,
        email,
        city,

        ---------- timestamps
        created_at,
        archived_at

    from source

)

select * from renamed
