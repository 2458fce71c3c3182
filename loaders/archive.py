"""Cold archive: copy whole business days of orders and expresses (and the users/items dimensions) from
TiDB into the warehouse's RAW schema, replacing those days, and log what was copied per day and table."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd

from loaders import fingerprint
from runner import failpoints, tidb, warehouse
from runner.config import Settings, WarehouseConfig
from runner.errors import EcomError

T = TypeVar("T")
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
    # how RAW gives back a stage column that it stores in another form (for the fingerprint check)
    readback_exprs: tuple[tuple[str, str], ...] = ()

    @property
    def column_types(self) -> dict[str, str]:
        return dict(c.split(" ", 1) for c in self.stage_columns.split(", "))

    @property
    def checked_types(self) -> dict[str, str]:
        """The columns whose values RAW must hold exactly (the day column is only the day's key)."""
        return {c: t for c, t in self.column_types.items() if c != "ORDER_CREATED_AT"}

    def readback(self) -> str:
        """The SELECT list that reads RAW rows back as the checked stage columns."""
        exprs = dict(self.readback_exprs)
        return ", ".join(f"{exprs[c]} AS {c}" if c in exprs else c for c in self.checked_types)

    def fingerprints(self, frame: pd.DataFrame, day: pd.Series) -> dict[dt.date, fingerprint.Fingerprint]:
        cents = frame[self.amount_column] if self.amount_column else None
        return fingerprint.by_day(frame, self.checked_types, day, cents)


def extracts(db: str, express_db: str) -> list[Extract]:
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
            readback_exprs=(("AMOUNT_CENTS", "CAST(ROUND(AMOUNT * 100) AS NUMBER(19,0))"),),
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
            readback_exprs=(("PRICE_CENTS", "CAST(ROUND(PRICE * 100) AS NUMBER(19,0))"),),
        ),
    ]


Prints = dict[dt.date, fingerprint.Fingerprint]
SNAPSHOT_TABLES = ("USERS", "ITEMS")
DAILY_TABLES = ("ORDERS", "EXPRESS")
READBACK_DAYS = 31  # days read back per query when checking: bounds memory (the stand-in has no batches)


@dataclass(frozen=True)
class ArchiveResult:
    first_day: dt.date
    last_day: dt.date
    orders: int
    express: int
    users: int
    items: int
    amount: float
    prints: dict[str, Prints]  # per table and day (snapshots under the last day): what TiDB held and RAW now holds


def day_bounds(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end): the timestamps of the business days first..last (the session is in the business zone)."""
    return dt.datetime.combine(first, dt.time()), dt.datetime.combine(last + dt.timedelta(days=1), dt.time())


def days_in(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=d) for d in range((last - first).days + 1)]


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


def read_frames(cur: Any, extract: Extract, start: dt.datetime, end: dt.datetime) -> Iterator[pd.DataFrame]:
    """The extract's rows (of [start, end) for a daily table, all of them for a snapshot) in bounded chunks."""
    cur.execute(extract.select, (start, end) if extract.day_column else ())
    while rows := cur.fetchmany(FETCH_ROWS):
        yield to_frame(extract, rows)


def to_frame(extract: Extract, rows: list[tuple[object, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(extract.column_types))
    for column, sql_type in extract.column_types.items():
        if sql_type.startswith("TIMESTAMP"):
            frame[column] = pd.to_datetime(frame[column])
    return frame


def _stage_name(table: str, run_id: str) -> str:
    """Each run stages into its own tables, so two runs never write into each other's stage."""
    return f"{table}__STAGE_{run_id}"


def _write_stage(
    wconn: Any, cfg: WarehouseConfig, stage: str, extract: Extract, frames: Iterator[pd.DataFrame]
) -> Iterator[pd.DataFrame]:
    """Write the frames into the run's stage table, yielding each frame once it is written."""
    from snowflake.connector import pandas_tools  # looked up at call time: the stand-in patches it

    wconn.cursor().execute(f"CREATE OR REPLACE TABLE {stage} ({extract.stage_columns})")
    for frame in frames:
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


def lock_name(settings: Settings, cfg_w: WarehouseConfig) -> str:
    """One archive, purge or forget at a time per warehouse RAW schema, whichever TiDB database feeds it
    (names upper-cased as Snowflake resolves them; the stand-in's warehouse is its directory)."""
    where = str(settings.warehouse_dir.resolve()) if cfg_w.is_standin else cfg_w.account.upper()
    return f"archive:{where}:{cfg_w.database.upper()}.{cfg_w.raw_schema.upper()}"


def archive_lock(tconn: Any, settings: Settings, cfg_w: WarehouseConfig) -> contextlib.AbstractContextManager[None]:
    """Archive, purge and the archive reset of `generate` take turns on the warehouse (see `lock_name`)."""
    return tidb.exclusive(tconn, lock_name(settings, cfg_w), "archive, purge or generate on this warehouse")


def archive(settings: Settings, first: dt.date, last: dt.date, progress: Progress | None = None) -> ArchiveResult:
    """Archive the business days [first, last] (both included) in one pass, replacing them in RAW.

    TiDB is read in one consistent snapshot; RAW gets the days, the dimension snapshots and the log rows
    in one warehouse transaction, committed only once their fingerprints equal what was read.
    """
    check_range(settings, first, last)
    report = progress or (lambda _table, _done, _total: None)
    cfg_t = settings.tidb
    start, end = day_bounds(first, last)
    read: dict[str, Prints] = {}
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
            # the lock lives on a connection of its own: the reader's long write timeout would keep a
            # dropped session, and its lock, alive on the server for an hour
            with tidb.connection(settings, cfg_t.database) as lock_conn, archive_lock(lock_conn, settings, cfg_w):
                ensure_raw_tables(wconn)
                _drop_stages(wconn, cfg_w)  # a killed run's leftovers: no other run is active while we hold the lock
                with tconn.cursor() as cur:
                    # One snapshot for every table read, so orders and their expresses agree.
                    tidb.start_snapshot(cur)
                    # in the snapshot: a purge commits its 'purging' mark before it deletes a row
                    require_not_purged(tconn, cfg_t.database, first, last)
                    for extract in extracts(cfg_t.database, cfg_t.express_database):
                        counts[extract.table] = 0
                        read[extract.table] = {}
                        stage = _stage_name(extract.table, run_id)
                        frames = read_frames(cur, extract, start, end)
                        for frame in _write_stage(wconn, cfg_w, stage, extract, frames):
                            counts[extract.table] += len(frame)
                            fingerprint.merge(
                                read[extract.table], extract.fingerprints(frame, day_of(extract, frame, last))
                            )
                            report(extract.table.lower(), counts[extract.table], 0)
                            failpoints.hit("archive.between_batches")
                    cur.execute("COMMIT")
                failpoints.hit("archive.after_stage")
                _publish(wconn, cfg_w, run_id, first, last, read, archived_at)
                failpoints.hit("archive.after_publish")
        finally:
            # cleanup must not hide the error that got us here: stages it cannot drop, the next run sweeps
            with contextlib.suppress(Exception):
                tconn.close()
            with contextlib.suppress(Exception):
                _drop_stages(wconn, cfg_w, run_id)
            wconn.close()
    amount = sum(p.cents for p in read["ORDERS"].values()) / 100
    return ArchiveResult(
        first, last, counts["ORDERS"], counts["EXPRESS"], counts["USERS"], counts["ITEMS"], round(amount, 2), read
    )


def day_of(extract: Extract, frame: pd.DataFrame, snapshot_day: dt.date) -> pd.Series:
    """Each row's business day; a dimension snapshot is filed under the last day archived."""
    if extract.day_column is None:
        return pd.Series(snapshot_day, index=frame.index)
    return pd.to_datetime(frame[extract.day_column]).dt.date


def _drop_stages(wconn: Any, cfg: WarehouseConfig, run_id: str | None = None) -> None:
    """Drop this run's stage tables, or (run_id None) every run's."""
    cur = wconn.cursor()
    if run_id is not None:
        names = [_stage_name(table, run_id) for table in DAILY_TABLES + SNAPSHOT_TABLES]
    else:
        cur.execute(
            f"SELECT table_name FROM {cfg.database}.information_schema.tables "
            "WHERE table_schema = %s AND table_name LIKE %s ESCAPE '!'",
            (cfg.raw_schema.upper(), "%!_!_STAGE!_%"),
        )
        names = [row[0] for row in cur.fetchall()]
    for name in names:
        cur.execute(f"DROP TABLE IF EXISTS {name}")


def _publish(
    wconn: Any,
    cfg: WarehouseConfig,
    run_id: str,
    first: dt.date,
    last: dt.date,
    read: dict[str, Prints],
    archived_at: dt.datetime,
) -> None:
    """Replace the days (and the dimension snapshots) in one transaction, together with their log rows.

    The fingerprints of what RAW then holds are checked inside the transaction: a mismatch rolls it back.
    """
    by_table = {e.table: e for e in extracts("_", "_")}
    days = days_in(first, last)
    cur = wconn.cursor()
    cur.execute("BEGIN")
    try:
        for table in DAILY_TABLES:
            cur.execute(f"DELETE FROM {table} WHERE ORDER_DATE BETWEEN %s AND %s", (first, last))
        for table in SNAPSHOT_TABLES:
            cur.execute(f"DELETE FROM {table}")
        for table, extract in by_table.items():
            stage = _stage_name(table, run_id)
            cur.execute(f"INSERT INTO {table} SELECT {extract.publish}, %s FROM {stage}", (archived_at,))
        failpoints.hit("archive.before_log_rows")
        cur.execute("DELETE FROM ARCHIVE_LOG WHERE ARCHIVE_DATE BETWEEN %s AND %s", (first, last))
        empty = fingerprint.Fingerprint()
        log_rows = [
            (day, table, read[table].get(day, empty).rows, _log_amount(table, read[table].get(day, empty)), archived_at)
            for day in days
            for table in DAILY_TABLES
        ]
        log_rows += [(last, t, read[t].get(last, empty).rows, None, archived_at) for t in SNAPSHOT_TABLES]
        cur.executemany("INSERT INTO ARCHIVE_LOG VALUES (%s, %s, %s, %s, %s)", log_rows)
        _check_published(wconn, cfg, first, last, read)
        cur.execute("COMMIT")
    except BaseException:
        # a failed ROLLBACK (the connection gone) must not hide why we got here; the server rolls back anyway
        with contextlib.suppress(Exception):
            cur.execute("ROLLBACK")
        raise


def _log_amount(table: str, print_: fingerprint.Fingerprint) -> float | None:
    return print_.cents / 100 if table == "ORDERS" else None


def read_back(wconn: Any, cfg: WarehouseConfig, extract: Extract, first: dt.date, last: dt.date) -> Prints:
    """Fingerprints of what RAW holds for [first, last] (a snapshot table: all of it, under `last`)."""
    cur = wconn.cursor()
    prints: Prints = {}
    if extract.day_column is None:
        for frame in warehouse.frames(cfg, cur, f"SELECT {extract.readback()} FROM {extract.table}"):
            fingerprint.merge(prints, extract.fingerprints(frame, pd.Series(last, index=frame.index)))
        return prints
    window_start = first
    while window_start <= last:
        window_end = min(last, window_start + dt.timedelta(days=READBACK_DAYS - 1))
        sql = (
            f"SELECT ORDER_DATE AS ARCHIVE_DAY, {extract.readback()} FROM {extract.table} "
            "WHERE ORDER_DATE BETWEEN %s AND %s"
        )
        for frame in warehouse.frames(cfg, cur, sql, (window_start, window_end)):
            fingerprint.merge(prints, extract.fingerprints(frame, pd.to_datetime(frame["ARCHIVE_DAY"]).dt.date))
        window_start = window_end + dt.timedelta(days=1)
    return prints


def _check_published(wconn: Any, cfg: WarehouseConfig, first: dt.date, last: dt.date, read: dict[str, Prints]) -> None:
    """Rows, amounts and checksums per day (and of each snapshot) in RAW must equal what was read from TiDB."""
    for extract in extracts("_", "_"):
        held = read_back(wconn, cfg, extract, first, last)
        wanted = read[extract.table]
        for day in sorted(set(held) | set(wanted)):
            if held.get(day) != wanted.get(day):
                got, want = held.get(day, fingerprint.Fingerprint()), wanted.get(day, fingerprint.Fingerprint())
                raise EcomError(
                    f"archive check failed for {extract.table} on {day}: TiDB had {want.rows} rows "
                    f"(checksum {want.hex}), the warehouse would hold {got.rows} (checksum {got.hex})",
                    "nothing was changed; run the archive for those days again",
                )


def require_not_purged(tconn: Any, database: str, first: dt.date, last: dt.date) -> None:
    """Archiving a day that was purged from TiDB would replace its archived rows with nothing."""
    with tconn.cursor() as cur:
        cur.execute(
            f"SELECT MIN(day), MAX(day), COUNT(*) FROM `{database}`.archive_purges WHERE day BETWEEN %s AND %s",
            (first, last),
        )
        low, high, count = cur.fetchone()
    if count:
        raise EcomError(
            f"{count} day(s) in {first}..{last} ({low}..{high}) were purged from TiDB after they were archived; "
            "archiving them again would replace them in the warehouse with what TiDB still holds of them",
            f"archive only days after {high}",
        )


def forget(settings: Settings) -> None:
    """Drop everything archived (the demo starting afresh). Refused while purged days exist, whose only
    copy is in the warehouse."""
    _drop_archive(settings, keep_purged=True, then=lambda: None)


def replace_history(settings: Settings, regenerate: Callable[[], T]) -> T:
    """Drop everything archived, then run `regenerate` under the same lock: the old archive describes orders
    that no longer exist, and no archive may publish them in between."""
    return _drop_archive(settings, keep_purged=False, then=regenerate)


def _drop_archive(settings: Settings, keep_purged: bool, then: Callable[[], T]) -> T:
    cfg_t = settings.tidb
    with warehouse.session(settings) as cfg, tidb.connection(settings, cfg_t.database) as tconn:
        tidb.require_schema(tconn, cfg_t)
        with archive_lock(tconn, settings, cfg):
            with tconn.cursor() as cur:
                purged = tidb.scalar(cur, f"SELECT COUNT(*) FROM `{cfg_t.database}`.archive_purges")
            if purged and keep_purged:
                raise EcomError(
                    f"the warehouse holds the only copy of {purged} day(s) purged from TiDB; dropping the archive "
                    "would lose them",
                    "archive only the days you need again, or `ecom generate` to start over",
                )
            conn = warehouse.connect(cfg)
            try:
                cur = conn.cursor()
                for table in RAW_DDL:
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
            finally:
                conn.close()
            return then()
