"""Cold archive: copy whole business days of orders and expresses (and the users/items dimensions) from
TiDB into the warehouse's RAW schema, replacing those days, and log what was copied per day and table."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from runner import tidb, warehouse
from runner.config import Settings, WarehouseConfig
from runner.errors import EcomError

FETCH_ROWS = 100_000
Progress = Callable[[str, int, int], None]

RAW_DDL = {
    "ORDERS": "ID NUMBER(19,0), USER_ID NUMBER(19,0), ITEM_ID NUMBER(19,0), ITEM_COUNT NUMBER(10,0), "
    "AMOUNT NUMBER(12,2), CREATED_AT TIMESTAMP_NTZ, ORDER_DATE DATE, ARCHIVED_AT TIMESTAMP_NTZ",
    "EXPRESS": "ID NUMBER(19,0), ORDER_ID NUMBER(19,0), CARRIER VARCHAR, TRACKING_NO VARCHAR, STATUS VARCHAR, "
    "SHIPPED_AT TIMESTAMP_NTZ, DELIVERED_AT TIMESTAMP_NTZ, UPDATED_AT TIMESTAMP_NTZ, ORDER_DATE DATE, "
    "ARCHIVED_AT TIMESTAMP_NTZ",
    "USERS": "ID NUMBER(19,0), NAME VARCHAR, EMAIL VARCHAR, CITY VARCHAR, CREATED_AT TIMESTAMP_NTZ, "
    "ARCHIVED_AT TIMESTAMP_NTZ",
    "ITEMS": "ID NUMBER(19,0), NAME VARCHAR, ITEM_TYPE VARCHAR, PRICE NUMBER(10,2), CREATED_AT TIMESTAMP_NTZ, "
    "ARCHIVED_AT TIMESTAMP_NTZ",
    "ARCHIVE_LOG": "ARCHIVE_DATE DATE, TABLE_NAME VARCHAR, ROW_COUNT NUMBER(19,0), AMOUNT_SUM NUMBER(18,2), "
    "ARCHIVED_AT TIMESTAMP_NTZ",
}


@dataclass(frozen=True)
class Extract:
    """How one RAW table is read from TiDB into its stage (money travels as integer cents: exact and fast)."""

    table: str
    stage_columns: str
    select: str
    publish: str  # the SELECT list that turns stage rows into RAW rows
    day_column: str | None = None  # the stage column that decides the business day (daily tables only)
    amount_column: str | None = None  # the stage column whose sum is logged and checked


def _extracts(db: str, express_db: str) -> list[Extract]:
    return [
        Extract(
            "ORDERS",
            "ID NUMBER(19,0), USER_ID NUMBER(19,0), ITEM_ID NUMBER(19,0), ITEM_COUNT NUMBER(10,0), "
            "AMOUNT_CENTS NUMBER(19,0), CREATED_AT TIMESTAMP_NTZ",
            f"SELECT id, user_id, item_id, item_count, CAST(ROUND(amount * 100) AS SIGNED), created_at "
            f"FROM `{db}`.orders WHERE created_at >= %s AND created_at < %s",
            "ID, USER_ID, ITEM_ID, ITEM_COUNT, CAST(AMOUNT_CENTS / 100 AS NUMBER(12,2)), CREATED_AT, "
            "CAST(CREATED_AT AS DATE)",
            day_column="CREATED_AT",
            amount_column="AMOUNT_CENTS",
        ),
        Extract(
            "EXPRESS",
            "ID NUMBER(19,0), ORDER_ID NUMBER(19,0), CARRIER VARCHAR, TRACKING_NO VARCHAR, STATUS VARCHAR, "
            "SHIPPED_AT TIMESTAMP_NTZ, DELIVERED_AT TIMESTAMP_NTZ, UPDATED_AT TIMESTAMP_NTZ, "
            "ORDER_CREATED_AT TIMESTAMP_NTZ",
            f"SELECT e.id, e.order_id, e.carrier, e.tracking_no, e.status, e.shipped_at, e.delivered_at, "
            f"e.updated_at, o.created_at FROM `{express_db}`.express e JOIN `{db}`.orders o ON o.id = e.order_id "
            f"WHERE o.created_at >= %s AND o.created_at < %s",
            "ID, ORDER_ID, CARRIER, TRACKING_NO, STATUS, SHIPPED_AT, DELIVERED_AT, UPDATED_AT, "
            "CAST(ORDER_CREATED_AT AS DATE)",
            day_column="ORDER_CREATED_AT",
        ),
        Extract(
            "USERS",
            "ID NUMBER(19,0), NAME VARCHAR, EMAIL VARCHAR, CITY VARCHAR, CREATED_AT TIMESTAMP_NTZ",
            f"SELECT id, name, email, city, created_at FROM `{db}`.users",
            "ID, NAME, EMAIL, CITY, CREATED_AT",
        ),
        Extract(
            "ITEMS",
            "ID NUMBER(19,0), NAME VARCHAR, ITEM_TYPE VARCHAR, PRICE_CENTS NUMBER(19,0), CREATED_AT TIMESTAMP_NTZ",
            f"SELECT id, name, item_type, CAST(ROUND(price * 100) AS SIGNED), created_at FROM `{db}`.items",
            "ID, NAME, ITEM_TYPE, CAST(PRICE_CENTS / 100 AS NUMBER(10,2)), CREATED_AT",
        ),
    ]


@dataclass(frozen=True)
class DayTotals:
    day: dt.date
    table: str
    rows: int
    amount: float | None


@dataclass(frozen=True)
class ArchiveResult:
    first_day: dt.date
    last_day: dt.date
    orders: int
    express: int
    users: int
    items: int
    amount: float
    days: list[DayTotals]


def parse_day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise EcomError(f"{option} {text!r} is not a date", "use YYYY-MM-DD, e.g. 2026-01-31") from None


def check_range(settings: Settings, first: dt.date, last: dt.date) -> None:
    today = settings.today()
    if first > last:
        raise EcomError(f"--from {first} is after --to {last}", "swap the two dates")
    if last >= today:
        raise EcomError(
            f"{last} is not over yet (today is {today} in {settings.timezone})",
            "archive only days before today; today's orders are still being written",
        )
    if (last - first).days > 3660:
        raise EcomError(f"{first}..{last} spans more than ten years", "archive a shorter range")


def _stream(cur: Any, sql: str, params: tuple[object, ...]) -> Iterator[list[tuple[object, ...]]]:
    cur.execute(sql, params)
    while rows := cur.fetchmany(FETCH_ROWS):
        yield rows


def _stage_name(table: str, run_id: str) -> str:
    """Each run stages into its own tables, so two runs never write into each other's stage."""
    return f"{table}__STAGE_{run_id}"


def _write_stage(
    wconn: Any, cfg: WarehouseConfig, stage: str, extract: Extract, chunks: Iterator[list[tuple[object, ...]]]
) -> Iterator[pd.DataFrame]:
    """Write the chunks into the run's stage table, yielding each chunk once it is written."""
    from snowflake.connector import pandas_tools  # looked up at call time: the stand-in patches it

    wconn.cursor().execute(f"CREATE OR REPLACE TABLE {stage} ({extract.stage_columns})")
    columns = [c.split()[0] for c in extract.stage_columns.split(", ")]
    for rows in chunks:
        frame = pd.DataFrame.from_records(rows, columns=columns)
        for column in columns:
            if column.endswith("_AT"):
                frame[column] = pd.to_datetime(frame[column])
        ok, _, written, _ = pandas_tools.write_pandas(
            wconn,
            frame,
            stage,
            # write_pandas quotes names: pass them as Snowflake stores unquoted identifiers (upper case)
            database=cfg.database.upper(),
            schema=cfg.raw_schema.upper(),
            auto_create_table=False,
            overwrite=False,
            use_logical_type=True,
        )
        if not ok or written != len(frame):
            raise EcomError(f"writing {stage} stopped after {written} of {len(frame)} rows", "run the archive again")
        yield frame


def ensure_raw_tables(wconn: Any) -> None:
    cur = wconn.cursor()
    for table, columns in RAW_DDL.items():
        cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")


def _tally(extract: Extract, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows and amount (cents) per business day in one chunk."""
    day = frame[extract.day_column].dt.date
    amount = frame[extract.amount_column] if extract.amount_column else pd.Series(0, index=frame.index)
    return pd.DataFrame({"rows": 1, "cents": amount}).groupby(day).sum()


def archive(settings: Settings, first: dt.date, last: dt.date, progress: Progress | None = None) -> ArchiveResult:
    """Archive the business days [first, last] (both included) in one pass, replacing them in RAW."""
    check_range(settings, first, last)
    report = progress or (lambda _table, _done, _total: None)
    cfg_t = settings.tidb
    start, end = dt.datetime.combine(first, dt.time()), dt.datetime.combine(last + dt.timedelta(days=1), dt.time())
    tallies: dict[str, list[pd.DataFrame]] = {}
    counts: dict[str, int] = {}
    archived_at = settings.now()
    run_id = uuid.uuid4().hex[:12].upper()
    with warehouse.session(settings) as cfg_w:
        wconn = warehouse.connect(cfg_w)
        try:
            tconn = tidb.connect(settings, cfg_t.database, streaming=True)
        except BaseException:
            wconn.close()
            raise
        try:
            tidb.require_schema(tconn, cfg_t)
            ensure_raw_tables(wconn)
            with tconn.cursor() as cur:
                # One snapshot for every table read, so orders and their expresses agree.
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                for extract in _extracts(cfg_t.database, cfg_t.express_database):
                    counts[extract.table] = 0
                    params = (start, end) if extract.day_column else ()
                    stage = _stage_name(extract.table, run_id)
                    chunks = _stream(cur, extract.select, params)
                    for frame in _write_stage(wconn, cfg_w, stage, extract, chunks):
                        counts[extract.table] += len(frame)
                        if extract.day_column:
                            tallies.setdefault(extract.table, []).append(_tally(extract, frame))
                        report(extract.table.lower(), counts[extract.table], 0)
                cur.execute("COMMIT")
            totals = _day_totals(first, last, tallies)
            _publish(wconn, run_id, first, last, totals, archived_at, counts)
        finally:
            tconn.close()
            _drop_stages(wconn, run_id)
            wconn.close()
    amount = sum(t.amount or 0 for t in totals if t.table == "ORDERS")
    return ArchiveResult(
        first, last, counts["ORDERS"], counts["EXPRESS"], counts["USERS"], counts["ITEMS"], round(amount, 2), totals
    )


def _day_totals(first: dt.date, last: dt.date, tallies: dict[str, list[pd.DataFrame]]) -> list[DayTotals]:
    """One entry per day and daily table, days without rows included (they are archived as empty)."""
    merged: dict[tuple[str, dt.date], tuple[int, int]] = {}
    for table, parts in tallies.items():
        for day, rows, cents in pd.concat(parts).groupby(level=0).sum().itertuples(name=None):
            merged[(table, day)] = (int(rows), int(cents))
    totals = []
    for offset in range((last - first).days + 1):
        day = first + dt.timedelta(days=offset)
        for table in ("ORDERS", "EXPRESS"):
            rows, cents = merged.get((table, day), (0, 0))
            totals.append(DayTotals(day, table, rows, cents / 100 if table == "ORDERS" else None))
    return totals


def _drop_stages(wconn: Any, run_id: str) -> None:
    cur = wconn.cursor()
    for extract in _extracts("_", "_"):
        cur.execute(f"DROP TABLE IF EXISTS {_stage_name(extract.table, run_id)}")


def _publish(
    wconn: Any,
    run_id: str,
    first: dt.date,
    last: dt.date,
    totals: list[DayTotals],
    archived_at: dt.datetime,
    counts: dict[str, int],
) -> None:
    """Replace the days (and the dimension snapshots) in one transaction, together with their log rows.

    The per-day check runs inside the transaction: a mismatch rolls everything back.
    """
    extracts = {e.table: e for e in _extracts("_", "_")}
    cur = wconn.cursor()
    cur.execute("BEGIN")
    try:
        for table in ("ORDERS", "EXPRESS"):
            cur.execute(f"DELETE FROM {table} WHERE ORDER_DATE BETWEEN %s AND %s", (first, last))
            stage = _stage_name(table, run_id)
            cur.execute(f"INSERT INTO {table} SELECT {extracts[table].publish}, %s FROM {stage}", (archived_at,))
        for table in ("USERS", "ITEMS"):
            cur.execute(f"DELETE FROM {table}")
            stage = _stage_name(table, run_id)
            cur.execute(f"INSERT INTO {table} SELECT {extracts[table].publish}, %s FROM {stage}", (archived_at,))
        cur.execute("DELETE FROM ARCHIVE_LOG WHERE ARCHIVE_DATE BETWEEN %s AND %s", (first, last))
        log_rows = [(t.day, t.table, t.rows, t.amount, archived_at) for t in totals]
        log_rows += [(last, table, counts[table], None, archived_at) for table in ("USERS", "ITEMS")]
        cur.executemany("INSERT INTO ARCHIVE_LOG VALUES (%s, %s, %s, %s, %s)", log_rows)
        _check_published(wconn, first, last, totals)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def forget(settings: Settings) -> None:
    """Drop everything archived (when the business data is regenerated, the old archive describes
    orders that no longer exist)."""
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            cur = conn.cursor()
            for table in RAW_DDL:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            conn.close()


def _check_published(wconn: Any, first: dt.date, last: dt.date, totals: list[DayTotals]) -> None:
    """Counts and sums per day on the warehouse side must equal what was read from TiDB."""
    cur = wconn.cursor()
    found: dict[tuple[dt.date, str], tuple[int, float | None]] = {}
    for table, amount_sql in (("ORDERS", "SUM(AMOUNT)"), ("EXPRESS", "NULL")):
        cur.execute(
            f"SELECT ORDER_DATE, COUNT(*), {amount_sql} FROM {table} WHERE ORDER_DATE BETWEEN %s AND %s GROUP BY 1",
            (first, last),
        )
        for day, rows, total in cur.fetchall():
            found[(day, table)] = (int(rows), None if total is None else round(float(total), 2))
    for t in totals:
        rows, amount = found.get((t.day, t.table), (0, 0.0 if t.table == "ORDERS" else None))
        if rows != t.rows or (t.amount is not None and abs((amount or 0) - t.amount) > 0.005):
            raise EcomError(
                f"archive check failed for {t.table} on {t.day}: TiDB had {t.rows} rows, the warehouse has {rows}",
                "run the archive for that day again",
            )
