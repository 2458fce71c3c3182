"""Cold archive: copy whole business days of orders and expresses (and the users/items dimensions) from
TiDB into the warehouse's RAW schema, replacing those days, and log what was copied per day and table."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from loaders import dataset, fingerprint
from runner import failpoints, lease, tidb, warehouse
from runner.config import Settings, WarehouseConfig
from runner.errors import EcomError
from runner.lease import Lease

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
    # what TiDB held when each dimension snapshot was last taken (see `Extract.digest_select`)
    "SNAPSHOT_DIGESTS": "TABLE_NAME VARCHAR, ROW_COUNT NUMBER(19,0), DIGEST VARCHAR, ARCHIVED_AT TIMESTAMP_NTZ",
}


@dataclass(frozen=True)
class Extract:
    """How one RAW table is read from TiDB into its stage (money travels as integer cents: exact and fast)."""

    table: str
    stage_columns: str
    columns: tuple[str, ...]  # the TiDB expressions of the stage columns, in their order
    source: str  # FROM … [WHERE …]; a daily table's takes the [start, end) of its days as two parameters
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

    @property
    def select(self) -> str:
        """The rows as the driver decodes them (a purge's locked batches; the reference of the fast reader)."""
        return f"SELECT {', '.join(self.columns)} {self.source}"

    @property
    def csv_select(self) -> str:
        """The rows as the server renders them: one CSV line each (see `read_frames`)."""
        types = self.column_types.values()
        fields = [_csv_field(expr, sql_type) for expr, sql_type in zip(self.columns, types, strict=True)]
        line = ", ',', ".join(fields)
        return f"SELECT CONCAT({line}) {self.source}"

    @property
    def digest_select(self) -> str:
        """One row that changes whenever any row does: the server hashes every row and sends only the sums,
        so an unchanged dimension costs one scan on TiDB instead of a copy (two CRC32 sums over the fields
        in two orders and separators, so that a change slipping past one is caught by the other)."""
        fields = [f"IFNULL({expr}, CHAR(0))" for expr in self.columns]
        forward = f"CRC32(CONCAT_WS(CHAR(31), {', '.join(fields)}))"
        backward = f"CRC32(CONCAT_WS(CHAR(30), {', '.join(reversed(fields))}))"
        return f"SELECT COUNT(*), COALESCE(SUM({forward}), 0), COALESCE(SUM({backward}), 0) {self.source}"

    def readback(self) -> str:
        """The SELECT list that reads RAW rows back as the checked stage columns.

        Whole numbers come back as BIGINT: the same values, which the connectors hand over as int64 arrays
        (the stand-in gives NUMBER(19,0) as Decimal objects, slow to fetch and to hash)."""
        exprs = dict(self.readback_exprs)
        for column, sql_type in self.checked_types.items():
            if sql_type.startswith("NUMBER") and column not in exprs:
                exprs[column] = f"CAST({column} AS BIGINT)"
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
            ("id", "user_id", "item_id", "item_count", "CAST(ROUND(amount * 100) AS SIGNED)", "created_at"),
            f"FROM `{db}`.orders WHERE created_at >= %s AND created_at < %s",
            "ID, USER_ID, ITEM_ID, ITEM_COUNT, CAST(AMOUNT_CENTS / 100 AS NUMBER(12,2)), CREATED_AT, "
            "CAST(CREATED_AT AS DATE)",
            day_column="CREATED_AT",
            amount_column="AMOUNT_CENTS",
            readback_exprs=(("AMOUNT_CENTS", "CAST(ROUND(AMOUNT * 100) AS BIGINT)"),),
        ),
        Extract(
            "EXPRESS",
            "ID NUMBER(19,0), ORDER_ID NUMBER(19,0), CARRIER VARCHAR, TRACKING_NO VARCHAR, STATUS VARCHAR, "
            "SHIPPED_AT TIMESTAMP_NTZ, DELIVERED_AT TIMESTAMP_NTZ, UPDATED_AT TIMESTAMP_NTZ, "
            "ORDER_CREATED_AT TIMESTAMP_NTZ",
            (
                "e.id",
                "e.order_id",
                "e.carrier",
                "e.tracking_no",
                "e.status",
                "e.shipped_at",
                "e.delivered_at",
                "e.updated_at",
                "o.created_at",
            ),
            f"FROM `{express_db}`.express e JOIN `{db}`.orders o ON o.id = e.order_id "
            "WHERE o.created_at >= %s AND o.created_at < %s",
            "ID, ORDER_ID, CARRIER, TRACKING_NO, STATUS, SHIPPED_AT, DELIVERED_AT, UPDATED_AT, "
            "CAST(ORDER_CREATED_AT AS DATE)",
            day_column="ORDER_CREATED_AT",
        ),
        Extract(
            "USERS",
            "ID NUMBER(19,0), NAME VARCHAR, EMAIL VARCHAR, CITY VARCHAR, CREATED_AT TIMESTAMP_NTZ",
            ("id", "name", "email", "city", "created_at"),
            f"FROM `{db}`.users",
            "ID, NAME, EMAIL, CITY, CREATED_AT",
        ),
        Extract(
            "ITEMS",
            "ID NUMBER(19,0), NAME VARCHAR, ITEM_TYPE VARCHAR, PRICE_CENTS NUMBER(19,0), CREATED_AT TIMESTAMP_NTZ",
            ("id", "name", "item_type", "CAST(ROUND(price * 100) AS SIGNED)", "created_at"),
            f"FROM `{db}`.items",
            "ID, NAME, ITEM_TYPE, CAST(PRICE_CENTS / 100 AS NUMBER(10,2)), CREATED_AT",
            readback_exprs=(("PRICE_CENTS", "CAST(ROUND(PRICE * 100) AS BIGINT)"),),
        ),
    ]


Prints = dict[dt.date, fingerprint.Fingerprint]
SNAPSHOT_TABLES = ("USERS", "ITEMS")
DAILY_TABLES = ("ORDERS", "EXPRESS")
READBACK_DAYS = 31  # days read back per query when checking: bounds memory
STANDIN_READBACK_ROWS = 100_000  # and rows per query on the stand-in, which has no batches (see warehouse.frames)


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

    @classmethod
    def combined(cls, parts: list[ArchiveResult]) -> ArchiveResult:
        """One result for consecutive runs (their days do not overlap)."""
        prints: dict[str, Prints] = {}
        for part in parts:
            for table, by_day in part.prints.items():
                prints.setdefault(table, {}).update(by_day)
        return cls(
            parts[0].first_day,
            parts[-1].last_day,
            sum(p.orders for p in parts),
            sum(p.express for p in parts),
            sum(p.users for p in parts),
            sum(p.items for p in parts),
            round(sum(p.amount for p in parts), 2),
            prints,
        )


def utc_now() -> dt.datetime:
    """Now in UTC, naive, to the second: how the warehouse stores ARCHIVED_AT."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


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


# No shop on this stack has orders before this: earlier dates are typing errors (0001-01-01), and a stray
# day decades before the rest would stretch every range derived from the archive.
EARLIEST_DAY = dt.date(1970, 1, 1)


def check_range(settings: Settings, first: dt.date, last: dt.date, *, limit_span: bool = True) -> None:
    """A range of business days that can be archived: from EARLIEST_DAY, over, in order, and (`limit_span`,
    for a range typed by a user) of ten years at most."""
    today = settings.today()
    if first < EARLIEST_DAY:
        raise EcomError(f"{first} is before {EARLIEST_DAY}", f"archive business days from {EARLIEST_DAY} on")
    if first > last:
        raise EcomError(f"--from {first} is after --to {last}", "swap the two dates")
    if last >= today:
        raise EcomError(
            f"{last} is not over yet (today is {today} in {settings.timezone})",
            "archive only days before today; today's orders are still being written",
        )
    if limit_span and (last - first).days > 3660:
        raise EcomError(f"{first}..{last} spans more than ten years", "archive a shorter range")


# A conservative rate of TiDB snapshot reading (with its stage writes) for sizing snapshots: `make bench`
# measures about 70k orders/s with their expresses here; a real warehouse's stage writes are slower.
PLANNED_ORDERS_PER_SECOND = 5_000
ARCHIVE_RUN_ORDERS = 1_000_000  # orders per archive run (with their expresses): bounds its memory


def snapshot_orders(settings: Settings) -> int:
    """Orders one TiDB snapshot may read (an archive run, a verify window): ARCHIVE_RUN_ORDERS at most, for
    memory, and few enough to stay well within ECOM_MAX_TRANSACTION_SECONDS."""
    return max(1, min(ARCHIVE_RUN_ORDERS, settings.max_transaction_seconds * PLANNED_ORDERS_PER_SECOND))


def runs_of_days(settings: Settings, first: dt.date, last: dt.date, orders: int) -> list[list[dt.date]]:
    """[first, last] cut into runs of consecutive days holding up to `orders` orders in TiDB (counted on the
    covering index of orders by time), a day holding more being a run of its own."""
    start, end = day_bounds(first, last)
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        tidb.require_schema(conn, settings.tidb)
        with tidb.patient(conn):  # a backfill's range counted on the index: silent until grouped
            cur.execute(
                "SELECT DATE(created_at), COUNT(*) FROM orders WHERE created_at >= %s AND created_at < %s "
                "GROUP BY DATE(created_at)",
                (start, end),
            )
            per_day = {day: int(count) for day, count in cur.fetchall()}
    runs: list[list[dt.date]] = [[]]
    held = 0
    for day in days_in(first, last):
        if runs[-1] and held + per_day.get(day, 0) > orders:
            runs.append([])
            held = 0
        runs[-1].append(day)
        held += per_day.get(day, 0)
    return runs


def read_frames(cur: Any, extract: Extract, start: dt.datetime, end: dt.datetime) -> Iterator[pd.DataFrame]:
    """The extract's rows (of [start, end) for a daily table, all of them for a snapshot) in bounded chunks.

    `cur` streams (an unbuffered cursor): the server sends the rows as it reads them, and only FETCH_ROWS
    of them are held here at a time. The server renders each row as one CSV line (`csv_select`), which
    Arrow's CSV reader parses in C: decoding the columns one value at a time in Python (the driver's way)
    took most of an archive's time. The frames are those `to_frame` makes of the driver's rows, dtypes
    and values alike; tests/test_reader.py holds the two to that.
    """
    cur.execute(extract.csv_select, (start, end) if extract.day_column else ())
    while rows := cur.fetchmany(FETCH_ROWS):
        frame = parse_lines(extract, rows)
        del rows  # not kept while the caller handles the frame
        yield frame


def _csv_field(expr: str, sql_type: str) -> str:
    """One column as a CSV field: NULL as an empty field; text quoted, its quotes doubled, so the empty
    string ("") is told from NULL and every character survives; numbers and timestamps as the server
    writes them ('2026-01-31 23:59:59'). No field is ever NULL, so CONCAT never drops a row's line."""
    if sql_type.startswith("VARCHAR"):
        return f"IFNULL(CONCAT('\"', REPLACE({expr}, '\"', '\"\"'), '\"'), '')"
    if sql_type.startswith(("TIMESTAMP", "NUMBER")):
        return f"IFNULL({expr}, '')"
    raise ValueError(f"no CSV form for {sql_type}")


def _arrow_type(sql_type: str) -> pa.DataType:
    if sql_type.startswith("VARCHAR"):
        return pa.string()
    if sql_type.startswith("TIMESTAMP"):
        return pa.timestamp("us")  # whole seconds or fractions, as the server writes them
    if sql_type.startswith("NUMBER") and sql_type.endswith(",0)"):
        return pa.int64()
    raise ValueError(f"no Arrow type for {sql_type}")


def parse_lines(extract: Extract, rows: list[tuple[str]]) -> pd.DataFrame:
    """The frame `to_frame` would make of these rows, from their CSV lines (one per row)."""
    types = extract.column_types
    try:
        text = "\n".join([row[0] for row in rows])
    except TypeError:  # a NULL (None) line: a field the server could not render (never expected)
        raise EcomError(f"TiDB rendered a row of {extract.table} as NULL", "report this as a bug") from None
    table = pa_csv.read_csv(
        io.BytesIO(text.encode()),
        read_options=pa_csv.ReadOptions(column_names=list(types), use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        convert_options=pa_csv.ConvertOptions(
            column_types={column: _arrow_type(sql_type) for column, sql_type in types.items()},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,  # "" is the empty string; only an empty field is NULL
        ),
    )
    if table.num_rows != len(rows):  # every line is one row: anything else is a misread
        raise EcomError(f"read {table.num_rows} rows of {extract.table} from {len(rows)} lines", "report this as a bug")
    frame = table.to_pandas()
    for column, sql_type in types.items():
        if sql_type.startswith("TIMESTAMP"):
            frame[column] = frame[column].astype("datetime64[ns]")  # as the driver's datetimes become
        elif sql_type.startswith("NUMBER") and table.column(column).null_count == len(frame):
            frame[column] = pd.Series([None] * len(frame), dtype=object)  # as from_records leaves all-NULL
    return frame


def to_frame(extract: Extract, rows: list[tuple[object, ...]]) -> pd.DataFrame:
    """A frame of the driver's rows (of `select`)."""
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
    # TRANSIENT: a stage lives minutes, and a permanent table would pay Time Travel and Fail-safe storage
    wconn.cursor().execute(f"CREATE OR REPLACE TRANSIENT TABLE {stage} ({extract.stage_columns})")
    for frame in frames:
        ok, written = warehouse.write_pandas(cfg, wconn, frame, stage)
        if not ok or written != len(frame):
            raise EcomError(f"writing {stage} stopped after {written} of {len(frame)} rows", "run the archive again")
        yield frame


def ensure_raw_tables(wconn: Any) -> None:
    cur = wconn.cursor()
    for table, columns in RAW_DDL.items():
        cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")


def lock_name(settings: Settings, cfg_w: WarehouseConfig) -> str:
    """One archive, purge or forget at a time per warehouse RAW schema (names upper-cased as Snowflake resolves
    them; the stand-in's warehouse is its directory). The lease lives in the TiDB database that feeds it: one
    TiDB database feeds one warehouse schema (two would not see each other's lease)."""
    where = str(settings.warehouse_dir.resolve()) if cfg_w.is_standin else cfg_w.account.upper()
    return f"archive:{where}:{cfg_w.database.upper()}.{cfg_w.raw_schema.upper()}"


ARCHIVE_LOCK_WAIT_SECONDS = 3.0


def archive_lock(settings: Settings, cfg_w: WarehouseConfig) -> contextlib.AbstractContextManager[Lease]:
    """Archive, purge and the archive reset of `generate` take turns on the warehouse (see `lock_name`): a lease
    in the TiDB database (runner/lease.py); a second run waits a few seconds, then stops with a message."""
    return lease.hold(
        settings, lock_name(settings, cfg_w), "archive, purge or generate on this warehouse", ARCHIVE_LOCK_WAIT_SECONDS
    )


def archive(
    settings: Settings,
    first: dt.date,
    last: dt.date,
    progress: Progress | None = None,
    *,
    allow_removal: bool = False,
) -> ArchiveResult:
    """Archive the business days [first, last] (both included) in one pass, replacing them in RAW.

    RAW is the copy of record: a day that TiDB now holds fewer of its archived rows of (deleted by hand, by
    a bug, by a TTL) is refused, naming the day and the counts, unless `allow_removal`.

    TiDB is read in one consistent snapshot; RAW gets the days, the dimension snapshots and the log rows
    in one warehouse transaction, committed only once their fingerprints equal what was read. A dimension
    is copied only when TiDB's digest of it differs from the one taken with its RAW copy (`users`/`items`
    in the result count the rows copied: 0 when RAW already held them).
    """
    check_range(settings, first, last)
    report = progress or (lambda _table, _done, _total: None)
    cfg_t = settings.tidb
    start, end = day_bounds(first, last)
    read: dict[str, Prints] = {}
    counts: dict[str, int] = {}
    archived_at = utc_now()  # UTC, as dbt's source freshness compares it
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
            dataset.require_whole_dataset(tconn, cfg_t)
            with archive_lock(settings, cfg_w) as held:
                ensure_raw_tables(wconn)
                _drop_stages(wconn, cfg_w)  # a killed run's leftovers: no other run is active while we hold the lock
                with tconn.cursor() as cur:
                    # One snapshot for every table read, so orders and their expresses agree.
                    tidb.start_snapshot(cur)
                    clock = tidb.SnapshotClock(settings, f"the archive of {first}..{last}")
                    # in the snapshot: a purge commits its 'purging' mark before it deletes a row
                    require_not_purged(tconn, cfg_t.database, first, last)
                    digests = {
                        e.table: snapshot_digest(cur, e)
                        for e in extracts(cfg_t.database, cfg_t.express_database)
                        if e.day_column is None
                    }
                    kept = unchanged_snapshots(wconn, digests)
                    for extract in extracts(cfg_t.database, cfg_t.express_database):
                        counts[extract.table] = 0
                        read[extract.table] = {}
                        if extract.table in kept:
                            continue  # RAW already holds exactly these rows
                        stage = _stage_name(extract.table, run_id)
                        frames = read_frames(cur, extract, start, end)
                        for frame in _write_stage(wconn, cfg_w, stage, extract, frames):
                            counts[extract.table] += len(frame)
                            fingerprint.merge(
                                read[extract.table], extract.fingerprints(frame, day_of(extract, frame, last))
                            )
                            report(extract.table.lower(), counts[extract.table], 0)
                            failpoints.hit("archive.between_batches")
                            clock.check()
                    cur.execute("COMMIT")
                failpoints.hit("archive.after_stage")
                copied = {t: digests[t] for t in SNAPSHOT_TABLES if t not in kept}
                _publish(wconn, cfg_w, run_id, first, last, read, archived_at, copied, held, allow_removal)
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


def snapshot_digest(cur: Any, extract: Extract) -> str:
    with tidb.patient(cur.connection):  # a scan of the whole table, silent until its one row
        cur.execute(extract.digest_select)
        ((rows, forward, backward),) = cur.fetchall()  # all: the reader's cursor is unbuffered
    return f"{rows}:{forward}:{backward}"


def unchanged_snapshots(wconn: Any, digests: dict[str, str]) -> set[str]:
    """The dimensions whose RAW copy is of exactly the rows TiDB holds now: the digest taken with the copy
    equals today's, and RAW still holds the rows copied then."""
    cur = wconn.cursor()
    cur.execute("SELECT TABLE_NAME, ROW_COUNT, DIGEST FROM SNAPSHOT_DIGESTS")
    stored = {table: (int(rows), digest) for table, rows, digest in cur.fetchall()}
    kept = set()
    for table, digest in digests.items():
        if table in stored and stored[table][1] == digest:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            if int(cur.fetchone()[0]) == stored[table][0]:
                kept.add(table)
    return kept


def day_of(extract: Extract, frame: pd.DataFrame, snapshot_day: dt.date) -> pd.Series:
    """Each row's business day; a dimension snapshot is filed under the last day archived."""
    if extract.day_column is None:
        return pd.Series(snapshot_day, index=frame.index)
    return pd.to_datetime(frame[extract.day_column]).dt.normalize()  # midnight stands for its day


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
    snapshots: dict[str, str],
    held: Lease,
    allow_removal: bool = False,
) -> None:
    """Replace the days (and the dimension snapshots taken, with their digests) in one transaction,
    together with their log rows.

    The fingerprints of what RAW then holds are checked inside the transaction: a mismatch rolls it back.
    """
    by_table = {e.table: e for e in extracts("_", "_") if e.day_column or e.table in snapshots}
    days = days_in(first, last)
    if not allow_removal:
        refuse_removals(wconn, run_id, first, last, read)
    cur = wconn.cursor()
    held.ensure("publishing the archive")
    cur.execute("BEGIN")
    try:
        for table in DAILY_TABLES:
            cur.execute(f"DELETE FROM {table} WHERE ORDER_DATE BETWEEN %s AND %s", (first, last))
        for table, digest in snapshots.items():
            cur.execute(f"DELETE FROM {table}")
            cur.execute("DELETE FROM SNAPSHOT_DIGESTS WHERE TABLE_NAME = %s", (table,))
            rows = sum(p.rows for p in read[table].values())
            cur.execute("INSERT INTO SNAPSHOT_DIGESTS VALUES (%s, %s, %s, %s)", (table, rows, digest, archived_at))
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
        log_rows += [(last, t, read[t].get(last, empty).rows, None, archived_at) for t in snapshots]
        cur.executemany("INSERT INTO ARCHIVE_LOG VALUES (%s, %s, %s, %s, %s)", log_rows)
        _check_published(wconn, cfg, first, last, read, set(by_table))
        held.ensure("committing the archive")  # a whole lease period ahead for the COMMIT
        cur.execute("COMMIT")
    except BaseException:
        # a failed ROLLBACK (the connection gone) must not hide why we got here; the server rolls back anyway
        with contextlib.suppress(Exception):
            cur.execute("ROLLBACK")
        raise


def removed_rows(wconn: Any, run_id: str, first: dt.date, last: dt.date) -> list[tuple[str, dt.date, int, int]]:
    """(table, day, archived rows, of them no longer in TiDB) for each day of [first, last] whose RAW rows
    are not all in this run's stage: by id, so a row replaced by another one counts too."""
    cur = wconn.cursor()
    found = []
    for table in DAILY_TABLES:
        cur.execute(
            f"SELECT r.ORDER_DATE, COUNT(*), COUNT_IF(s.ID IS NULL) FROM {table} r "
            f"LEFT JOIN {_stage_name(table, run_id)} s ON s.ID = r.ID "
            "WHERE r.ORDER_DATE BETWEEN %s AND %s GROUP BY r.ORDER_DATE ORDER BY r.ORDER_DATE",
            (first, last),
        )
        found += [(table, day, int(rows), int(gone)) for day, rows, gone in cur.fetchall() if gone]
    return found


def refuse_removals(wconn: Any, run_id: str, first: dt.date, last: dt.date, read: dict[str, Prints]) -> None:
    """Stop a re-archive that would delete archived rows: TiDB lost them, the warehouse is their copy of record."""
    removed = removed_rows(wconn, run_id, first, last)
    if removed:
        table, day, archived, gone = removed[0]
        now = read[table].get(day, fingerprint.Fingerprint()).rows
        raise removal_refused(table, day, f"{gone} of its {archived} archived", now, len(removed) - 1)


def removal_refused(table: str, day: dt.date, what: str, tidb_rows: int, more: int) -> EcomError:
    """The one line that refuses to replace an archived day with fewer of its rows."""
    also = f" (and {more} more day/table)" if more else ""
    return EcomError(
        f"archiving {day} again would remove {what} {table.lower()} rows (TiDB now holds {tidb_rows}){also}; "
        "the warehouse keeps them as the copy of record",
        "restore the rows in TiDB, or rerun with --allow-removal to replace the archived day with what TiDB holds",
    )


def _log_amount(table: str, print_: fingerprint.Fingerprint) -> float | None:
    return print_.cents / 100 if table == "ORDERS" else None


def read_back(wconn: Any, cfg: WarehouseConfig, extract: Extract, first: dt.date, last: dt.date) -> Prints:
    """Fingerprints of what RAW holds for [first, last] (a snapshot table: all of it, under `last`)."""
    cur = wconn.cursor()
    prints: Prints = {}
    if extract.day_column is None:
        rows = _count(cur, f"SELECT COUNT(*) FROM {extract.table}") if cfg.is_standin else 0
        for where in warehouse.key_slices(cfg, wconn, extract.table, "ID", rows, STANDIN_READBACK_ROWS):
            sql = f"SELECT {extract.readback()} FROM {extract.table} WHERE {where}"
            for frame in warehouse.result_frames(cfg, wconn, sql):
                fingerprint.merge(prints, extract.fingerprints(frame, pd.Series(last, index=frame.index)))
        return prints
    for window_start, window_end, rows in _readback_windows(cur, cfg, extract.table, first, last):
        for part, parts in _id_slices(cfg, rows):
            sql = (
                f"SELECT ORDER_DATE AS ARCHIVE_DAY, {extract.readback()} FROM {extract.table} "
                f"WHERE ORDER_DATE BETWEEN %s AND %s AND {_id_slice(part, parts)}"
            )
            for frame in warehouse.result_frames(cfg, wconn, sql, (window_start, window_end)):
                fingerprint.merge(prints, extract.fingerprints(frame, pd.to_datetime(frame["ARCHIVE_DAY"])))
    return prints


def _readback_windows(
    cur: Any, cfg: WarehouseConfig, table: str, first: dt.date, last: dt.date
) -> list[tuple[dt.date, dt.date, int]]:
    """[from, to] windows of days to read back, with their rows (0: not counted), of READBACK_DAYS days at
    most; on the stand-in, which hands over a result all at once, of STANDIN_READBACK_ROWS rows at most
    unless one day alone holds more (`_id_slices` then cuts that day's query)."""
    if not cfg.is_standin:
        windows = []
        while first <= last:
            end = min(last, first + dt.timedelta(days=READBACK_DAYS - 1))
            windows.append((first, end, 0))
            first = end + dt.timedelta(days=1)
        return windows
    cur.execute(
        f"SELECT ORDER_DATE, COUNT(*) FROM {table} WHERE ORDER_DATE BETWEEN %s AND %s "
        "GROUP BY ORDER_DATE ORDER BY ORDER_DATE",
        (first, last),
    )
    counted: list[tuple[dt.date, dt.date, int]] = []
    for day, count in cur.fetchall():
        rows = int(count)
        if counted and counted[-1][2] + rows <= STANDIN_READBACK_ROWS and (day - counted[-1][0]).days < READBACK_DAYS:
            counted[-1] = (counted[-1][0], day, counted[-1][2] + rows)
        else:
            counted.append((day, day, rows))
    return counted


def _count(cur: Any, sql: str) -> int:
    cur.execute(sql)
    return int(cur.fetchone()[0])


def _id_slices(cfg: WarehouseConfig, rows: int) -> list[tuple[int, int]]:
    """(part, parts): the slices of ids that read a day of `rows` rows back in queries of STANDIN_READBACK_ROWS
    rows at most, on the stand-in (a real warehouse hands a result over in batches: one slice). By MOD: slow
    over a big table (a snapshot is cut by key ranges instead), fine within one day's rows."""
    parts = max(1, -(-rows // STANDIN_READBACK_ROWS)) if cfg.is_standin else 1
    return [(part, parts) for part in range(parts)]


def _id_slice(part: int, parts: int) -> str:
    """The rows of slice `part` of `parts`: every row is in exactly one (a NULL id in the first)."""
    return "TRUE" if parts == 1 else f"COALESCE(MOD(ABS(ID), {parts}), 0) = {part}"


def _check_published(
    wconn: Any, cfg: WarehouseConfig, first: dt.date, last: dt.date, read: dict[str, Prints], tables: set[str]
) -> None:
    """Rows, amounts and checksums per day (and of each snapshot taken) in RAW must equal what was read."""
    for extract in (e for e in extracts("_", "_") if e.table in tables):
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
    _drop_archive(settings, lambda drop: drop(True))


def replace_history(settings: Settings, regenerate: Callable[[Callable[[], None]], T]) -> T:
    """Run `regenerate` under the archive lease, handing it the function that drops everything archived: it
    calls that once the new data is whole, right before it swaps it in (the old archive describes orders about
    to vanish; until then it stays, with the data it describes). No archive or purge runs meanwhile, so none
    files or deletes rows of the dataset on its way out."""
    return _drop_archive(settings, lambda drop: regenerate(lambda: drop(False)))


def _drop_archive(settings: Settings, then: Callable[[Callable[[bool], None]], T]) -> T:
    """Run `then` under the archive lease, with `drop(keep_purged)`, which drops every RAW table (refused, when
    `keep_purged`, while TiDB has purged days whose only copy is in the warehouse)."""
    cfg_t = settings.tidb
    with warehouse.session(settings) as cfg:
        with tidb.connection(settings, cfg_t.database) as tconn:  # not held open through a long `then`
            tidb.require_schema(tconn, cfg_t)
        with archive_lock(settings, cfg) as held:

            def drop(keep_purged: bool) -> None:
                if keep_purged:
                    _require_no_purged_days(settings)
                conn = warehouse.connect(cfg)
                try:
                    cur = conn.cursor()
                    held.ensure("dropping the archive")  # the generate's swap follows within this lease period
                    for table in RAW_DDL:
                        cur.execute(f"DROP TABLE IF EXISTS {table}")
                finally:
                    conn.close()

            return then(drop)


def _require_no_purged_days(settings: Settings) -> None:
    database = settings.tidb.database
    with tidb.connection(settings, database) as tconn, tconn.cursor() as cur:
        purged = tidb.scalar(cur, f"SELECT COUNT(*) FROM `{database}`.archive_purges")
    if purged:
        raise EcomError(
            f"the warehouse holds the only copy of {purged} day(s) purged from TiDB; dropping the archive "
            "would lose them",
            "archive only the days you need again, or `ecom generate` to start over",
        )
