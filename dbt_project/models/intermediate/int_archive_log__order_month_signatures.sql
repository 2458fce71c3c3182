-- One row per calendar month holding archived orders before the as-of date, with a signature of
-- the archive runs that wrote them: the month's business days before the as-of date that the
-- archive log records with at least one order, each with when it was (last) archived, its row
-- count and its amount. Re-archiving a day (a new ARCHIVED_AT, and usually new counts), a day
-- shrinking to no orders, or the as-of date moving into or out of the month changes the signature;
-- nothing else does. int_orders__monthly_rollup stores the signature of each month it builds and
-- rebuilds exactly the months whose signature changed (macros/incremental_months.sql).
--
-- Days that hold no orders are left out: they add nothing to a month, so a month with only empty
-- days has no row (no orders, nothing to build). Only numbers enter the signed text, so it does not
-- depend on session date/time formats.

with

log_entries as (

    select * from {{ ref('stg_raw__archive_log') }}

    where
        table_name = 'orders'
        and row_count > 0
        and archive_date < {{ as_of_date() }}

),

signed_days as (

    select
        cast(date_trunc('month', archive_date) as date) as bill_month,
        archive_date,
        archived_at,
        row_count,
        cast(datediff(day, cast('1970-01-01' as date), archive_date) as varchar)
        || ':' || cast(date_part(epoch_microsecond, archived_at) as varchar)
        || ':' || cast(row_count as varchar)
        || ':' || cast({{ to_cents('coalesce(amount_sum, 0)') }} as varchar) as day_signature

    from log_entries

),

signed_months as (

    select
        bill_month,
        cast(md5(
            listagg(day_signature, ',') within group (order by day_signature)
        ) as varchar(32)) as month_signature,
        cast(count(*) as number(18, 0)) as archived_day_count,
        cast(sum(row_count) as number(18, 0)) as logged_order_count,
        max(archived_at) as last_archived_at

    from signed_days

    group by bill_month

)

select * from signed_months
