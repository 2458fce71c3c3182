"""Reverse ETL: the marts go back to TiDB's serving tables, all of them swapped in at once.

Each table is rebuilt aside (`<table>__new`), then one RENAME TABLE statement swaps every table in,
so a reader sees the old set or the new set: never a mix, an empty table or stale rows. Leftovers of
an export killed half-way (`__new`, `__old`) are swept by the next one; exports into one database take
turns (a named lock, released by the server when the session ends, even by a kill), so one export's sweep
never drops another's half-built tables. Marts of different as-of dates (a transform killed between
models) are refused rather than served side by side; so are marts that no transform released (runner/release.py:
a transform killed or failed before every test passed, marts rebuilt by a plain `ecom dbt run`), and the
release is read again just before the swap, so marts that a dbt command began rebuilding meanwhile are not
swapped in either.

The marts are streamed: read in batches of at most EXPORT_ROWS rows, each loaded into its `__new` table at
once (the next one read and rendered meanwhile, `bulk.load_batches`), so memory does not grow with the
marts. The as-of dates are checked before anything is built and again on every row loaded; a mix found
while loading drops the `__new` tables before the swap. Numbers are read in forms far cheaper to convert
than Decimal objects, and exact: whole numbers that fit as BIGINT (int64 arrays), other fixed-point numbers
as their decimal text (LOAD DATA then parses them as TiDB would; any loss is still refused). The
warehouse session stays open while loading (the stand-in's files are held for the export's length).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Set
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pymysql

from loaders.bulk import load_batches
from runner import failpoints, lease, release, tidb, warehouse
from runner.config import Settings
from runner.errors import EcomError
from runner.lease import Lease

EXPORT_ROWS = 100_000  # rows per batch loaded into TiDB (and about that per query on the stand-in)
LOCK_WAIT_SECONDS = 600  # how long an export waits for another one into the same database
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ServingTable:
    table: str  # in TiDB
    mart: str  # in the warehouse
    columns: dict[str, str]  # TiDB column -> mart expression
    # A whole-number mart column by whose ranges the stand-in reads the mart in slices (see
    # `warehouse.key_slices`); None for a mart small by construction (one row per month), read whole.
    slice_key: str | None = None


SERVING_TABLES = [
    ServingTable(
        "user_labels",
        "dim_user_labels",
        {
            c: c
            for c in (
                "user_id",
                "user_label",
                "avg_amount",
                "order_count",
                "total_amount",
                "overall_avg_amount",
                "as_of_date",
            )
        },
        slice_key="user_id",
    ),
    ServingTable(
        "hot_items",
        "fct_weekly_hot_items",
        {"item_label": "item_label", "rank": "item_rank"}
        | {
            c: c
            for c in (
                "item_id",
                "units_sold",
                "item_name",
                "item_price",
                "item_type",
                "price_threshold",
                "window_start",
                "window_end",
                "as_of_date",
            )
        },
        slice_key="item_id",
    ),
    ServingTable(
        "monthly_bills",
        "fct_monthly_bills",
        {c: c for c in ("user_id", "month", "order_count", "units", "total_amount", "as_of_date")},
        slice_key="user_id",
    ),
    ServingTable(
        "monthly_spending",
        "fct_monthly_spending",
        {c: c for c in ("month", "total_amount", "order_count", "buyer_count", "avg_bill_per_buyer", "as_of_date")},
    ),
]


@dataclass(frozen=True)
class ExportResult:
    rows: dict[str, int]
    as_of_date: dt.date | None
    released_at: dt.datetime | None = None  # when the transform that released these marts passed (UTC)
    unknown_users: int = 0  # labels left out: their users are no longer in TiDB's users table


# The connector's type codes (snowflake.connector.constants.FIELD_NAME_TO_ID), as fakesnow gives them too.
_FIXED, _DATE = 0, 3
_EXACT_FLOAT_INTS = 2**53  # whole numbers a float64 holds exactly


@dataclass(frozen=True)
class MartRead:
    """How one mart is read: its SELECT list, the types its values arrive in, and what it holds now."""

    spec: ServingTable
    source: str  # the mart, qualified
    select: str
    ints: tuple[str, ...]  # read as BIGINT: arrive as integers (floats in a batch that holds NULLs)
    dates: tuple[str, ...]
    rows: int
    as_of_dates: frozenset[Any]


def _is_missing(exc: Exception) -> bool:
    return "does not exist" in str(exc).lower() or "not found" in str(exc).lower()


def _column_select(expr: str, meta: Any) -> tuple[str, bool]:
    """The SELECT expression a mart column is read by, and whether it arrives as a whole number.

    Whole numbers of up to 18 digits as BIGINT (int64 arrays; NUMBER(p,0) arrives as Decimal objects on the
    stand-in); other fixed-point numbers as their decimal text, exact, which Arrow writes as it is (Decimal
    objects cost about 15x more to fetch and render). Everything else as it is."""
    if meta.type_code != _FIXED:
        return expr, False
    if meta.scale == 0 and meta.precision is not None and meta.precision <= 18:
        return f"CAST({expr} AS BIGINT)", True
    return f"CAST({expr} AS VARCHAR)", False


def plan_read(wconn: Any, schema: str, spec: ServingTable) -> MartRead:
    """Look at a mart: its column types, rows and as-of dates (stops if the mart is not built yet)."""
    source = f"{schema}.{spec.mart}"
    cur = wconn.cursor()
    as_of = spec.columns["as_of_date"]
    try:
        cur.execute(f"SELECT {', '.join(spec.columns.values())} FROM {source} LIMIT 0")
        description = list(cur.description)
        warehouse.forget_result(wconn, cur)
        cur.execute(f"SELECT {as_of}, COUNT(*) FROM {source} GROUP BY {as_of}")
        counted = cur.fetchall()
        warehouse.forget_result(wconn, cur)
    except Exception as exc:
        if _is_missing(exc):
            raise EcomError(f"the warehouse has no {source} yet", "run `ecom transform` first") from None
        raise
    selects, ints, dates = [], [], []
    for (column, expr), meta in zip(spec.columns.items(), description, strict=True):
        select, whole = _column_select(expr, meta)
        selects.append(f"{select} AS {column.upper()}")
        if whole:
            ints.append(column)
        if meta.type_code == _DATE:
            dates.append(column)
    return MartRead(
        spec,
        source,
        ", ".join(selects),
        tuple(ints),
        tuple(dates),
        sum(int(n) for _, n in counted),
        frozenset(day for day, _ in counted),
    )


def _whole_numbers(column: pd.Series, where: str) -> pd.Series:
    """A BIGINT column that arrived as floats (the batch holds NULLs) as nullable integers, if exact."""
    values = column.dropna()
    if (values.abs() > _EXACT_FLOAT_INTS).any():
        raise EcomError(
            f"{where} holds NULLs beside whole numbers too large to read exactly",
            "fill the NULLs in the mart (the serving columns are NOT NULL)",
        )
    return column.astype("Int64")


def _typed(frame: pd.DataFrame, read: MartRead) -> pd.DataFrame:
    """A batch as read, with the serving table's column names and its values in the types that load exactly."""
    frame.columns = list(read.spec.columns)
    for column in read.ints:
        if frame[column].dtype.kind == "f":
            frame[column] = _whole_numbers(frame[column], f"{read.source}.{column}")
    for column in read.dates:
        if frame[column].dtype.kind == "M":  # a connector that hands dates over as timestamps
            frame[column] = frame[column].dt.date
    return frame


def read_batches(wcfg: Any, wconn: Any, read: MartRead) -> Iterator[pd.DataFrame]:
    """The mart's rows in batches of at most EXPORT_ROWS rows (a stand-in slice: about that many)."""
    key = read.spec.slice_key
    # the stand-in's slices aim a little under EXPORT_ROWS: a slice holds all the rows of its edge key
    per_slice = max(1, EXPORT_ROWS * 9 // 10)
    slices = warehouse.key_slices(wcfg, wconn, read.source, key, read.rows, per_slice) if key else ["TRUE"]
    for where in slices:
        sql = f"SELECT {read.select} FROM {read.source} WHERE {where}"
        for frame in warehouse.result_frames(wcfg, wconn, sql):
            if len(frame) <= EXPORT_ROWS:
                yield _typed(frame, read)
                continue
            # a real warehouse's batches are its result chunks, of any size: cut into equal pieces
            size = -(-len(frame) // -(-len(frame) // EXPORT_ROWS))
            for start in range(0, len(frame), size):
                yield _typed(frame.iloc[start : start + size].reset_index(drop=True), read)


def _one_as_of_date(dates: Mapping[str, Set[Any]]) -> dt.date | None:
    """The as-of date all marts share; an interrupted transform leaves some marts on another date."""
    found = set().union(*dates.values())
    if len(found) > 1:
        detail = ", ".join(f"{table} {'/'.join(sorted(map(str, days)))}" for table, days in dates.items() if days)
        raise EcomError(
            f"the marts are not from one transform (as of: {detail})",
            "rerun `ecom transform` (an earlier one did not finish), then `ecom export`",
        )
    return next(iter(found), None)


def lock_name(database: str) -> str:
    """The lease (runner/lease.py) that exports into `database` take turns on."""
    return f"export:{database}"


def _renewing(held: Lease, what: str, frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The frames, the lease renewed before each (on a connection of its own: the load's is busy)."""
    for frame in frames:
        held.ensure(what)
        yield frame


def _drop_new(cur: pymysql.cursors.Cursor, db: str, tables: list[str]) -> None:
    """Drop the `__new` tables built so far; a failed DROP (the connection gone) must not hide why we got
    here, and the next export sweeps them anyway."""
    if tables:
        with contextlib.suppress(Exception):
            cur.execute(f"DROP TABLE IF EXISTS {', '.join(f'{db}.{t}__new' for t in tables)}")


def _build(
    settings: Settings,
    wcfg: Any,
    wconn: Any,
    conn: pymysql.connections.Connection,
    cur: pymysql.cursors.Cursor,
    exported_at: dt.datetime,
    report: Progress,
    held: Lease,
) -> tuple[dict[str, int], release.Release, int]:
    """Stream every mart into its `__new` table; the rows loaded per table, the release they belong to, and
    how many labels were left out (of users TiDB no longer has).

    Refused before anything is built unless the marts are of one as-of date and a transform released them
    after every test passed (runner/release.py). The lease is renewed before each table is (re)created and
    before each batch: a run that lost it to another export stops before touching the tables that one builds.
    On a refusal or an error the `__new` tables built so far are dropped (a kill leaves them to the sweep)."""
    db = f"`{settings.tidb.database}`"
    rows: dict[str, int] = {}
    seen: dict[str, set[Any]] = {}
    reads = [plan_read(wconn, f"{wcfg.database}.{wcfg.schema}", spec) for spec in SERVING_TABLES]
    marts_as_of = _one_as_of_date({read.spec.table: read.as_of_dates for read in reads})  # refused before building
    released = release.require_passed(release.read(wconn, wcfg), marts_as_of)
    built: list[str] = []
    try:
        for read in reads:
            table = read.spec.table
            held.ensure(f"building {table}__new", conn)
            cur.execute(f"DROP TABLE IF EXISTS {db}.{table}__new, {db}.{table}__old")
            cur.execute(f"CREATE TABLE {db}.{table}__new LIKE {db}.{table}")
            built.append(table)
            rows[table], seen[table] = 0, set()
            batches = (
                (f"{db}.{table}__new", frame.assign(exported_at=exported_at))
                for frame in _renewing(held, f"loading {table}__new", read_batches(wcfg, wconn, read))
            )
            for _, frame in load_batches(conn, batches):
                rows[table] += len(frame)
                seen[table].update(frame["as_of_date"].unique())
                report(table, rows[table], max(rows[table], read.rows))
            report(table, rows[table], rows[table])
            failpoints.hit("export.between_tables")  # crash tests: some `__new` tables built, the rest not
        # what was loaded is what counts: the marts may have changed since they were looked at
        release.require_passed(released, _one_as_of_date(seen))
        # labels serve recommendations, which exist for the users TiDB has: the label of a user deleted since
        # their orders were archived would answer for a user that `ecom recommend` says does not exist
        unknown = cur.execute(
            f"DELETE l FROM {db}.user_labels__new l LEFT JOIN {db}.users u ON u.id = l.user_id WHERE u.id IS NULL"
        )
        rows["user_labels"] -= unknown
        return rows, released, unknown
    except BaseException:
        _drop_new(cur, db, built)
        raise


def export(settings: Settings, progress: Progress | None = None) -> ExportResult:
    """Publish the released marts (see runner/release.py) into the serving tables, all swapped in at once."""
    report = progress or (lambda _table, _done, _total: None)
    cfg = settings.tidb
    db = f"`{cfg.database}`"
    exported_at = settings.now()
    with tidb.connection(settings, cfg.database) as conn:
        tidb.require_schema(conn, cfg)
    # One at a time: else another export's sweep could drop our `__new` tables, and our RENAME swap in
    # its half-built ones. A second export waits for the first (the lease first, then the connection, which
    # would otherwise sit idle through the wait). The marts are read under the lease too, so a slower
    # export never swaps older marts in over a newer one. The warehouse session stays open up to the swap
    # (the stand-in's files are held for the export's length), so the release can be read again just before it.
    with (
        lease.hold(settings, lock_name(cfg.database), "export into this database", LOCK_WAIT_SECONDS) as held,
        tidb.connection(settings, cfg.database) as conn,
        conn.cursor() as cur,
        warehouse.session(settings) as wcfg,
        contextlib.closing(warehouse.connect(wcfg)) as wconn,
    ):
        rows, released, unknown = _build(settings, wcfg, wconn, conn, cur, exported_at, report, held)
        failpoints.hit("export.before_swap")  # every `__new` table built, readers still on the old set
        try:
            # a dbt command that started since the release was read (a transform elsewhere) marked it
            # 'building' before touching a mart: the rows loaded may be of marts it was rebuilding
            release.require_unchanged(wconn, wcfg, released)
        except BaseException:
            _drop_new(cur, db, [s.table for s in SERVING_TABLES])
            raise
        swaps = ", ".join(
            f"{db}.{s.table} TO {db}.{s.table}__old, {db}.{s.table}__new TO {db}.{s.table}" for s in SERVING_TABLES
        )
        # RENAME commits by itself, so the lease cannot be checked inside it: renewed just before, it is ours
        # for a whole lease period (and the keep-alive goes on). On MySQL/MariaDB the swap waits for readers'
        # metadata locks for half a lease at most; TiDB ignores lock_wait_timeout (a no-op variable there).
        cur.execute(f"SET SESSION lock_wait_timeout = {max(1, settings.lock_lease_seconds // 2)}")
        held.ensure("swapping the serving tables")
        with tidb.patient(conn):  # the server's own lock-wait error comes first, not the read bound
            cur.execute(f"RENAME TABLE {swaps}")
        failpoints.hit("export.after_swap")  # readers on the new set, the `__old` tables not dropped yet
        cur.execute(f"DROP TABLE {', '.join(f'{db}.{s.table}__old' for s in SERVING_TABLES)}")
    failpoints.hit("export.before_run_log")  # the export is done; the pipeline has not logged the run yet
    return ExportResult(
        rows=rows, as_of_date=released.as_of_date, released_at=released.finished_at, unknown_users=unknown
    )
