with

source as (

    select * from {{ source('raw', 'archive_log') }}

),

renamed as (

    select

        archive_date,
        lower(table_name) as table_name,
        row_count,
        amount_sum,
        archived_at

    from source

)

select * from renamed
