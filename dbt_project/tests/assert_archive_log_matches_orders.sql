{{ config(severity='warn') }}

-- The archive loader's log agrees with what RAW holds: for each business day it logged for
-- `orders` (its latest run for that day), the archived orders of that day have the logged row
-- count and amount sum. Returns the days that disagree. A warning, not an error: it points at
-- the loader (a partial or doubled load), not at this project's logic.

with

log_entries as (

    select * from {{ ref('stg_raw__archive_log') }}

    where table_name = 'orders'

),

latest_log as (

    select
        archive_date,
        row_count,
        amount_sum

    from log_entries

    qualify row_number() over (partition by archive_date order by archived_at desc) = 1

),

archived as (

    select
        order_date,
        count(*) as row_count,
        sum({{ to_cents('amount') }}) as amount_sum_cents

    from {{ ref('stg_raw__orders') }}

    group by order_date

),

compared as (

    select
        latest_log.archive_date,
        latest_log.row_count as logged_row_count,
        coalesce(archived.row_count, 0) as archived_row_count,
        latest_log.amount_sum as logged_amount_sum,
        coalesce(archived.amount_sum_cents, 0) as archived_amount_sum_cents

    from latest_log

    left join archived
        on latest_log.archive_date = archived.order_date

)

select * from compared

where
    logged_row_count != archived_row_count
    or {{ to_cents('coalesce(logged_amount_sum, 0)') }} != archived_amount_sum_cents
