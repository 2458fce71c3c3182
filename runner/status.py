"""`ecom status`: can we reach both sides, how many rows each holds, and when each step last ran."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field

import pymysql

from runner import release, runs, tidb, tiflash, warehouse
from runner.config import Settings
from runner.errors import EcomError, redact
from runner.serving import Table

TIDB_TABLES = ["users", "items", "orders", "user_labels", "hot_items", "monthly_bills", "monthly_spending"]
WAREHOUSE_TABLES = [
    "RAW.USERS",
    "RAW.ITEMS",
    "RAW.ORDERS",
    "RAW.EXPRESS",
    "RAW.ARCHIVE_LOG",
    "{schema}.DIM_USER_LABELS",
    "{schema}.FCT_WEEKLY_HOT_ITEMS",
    "{schema}.FCT_MONTHLY_BILLS",
    "{schema}.FCT_MONTHLY_SPENDING",
]
# A health check answers within seconds whatever TiDB does (a server that accepts and never answers, one that
# answers each packet just in time): each connect, read and write waits STATUS_READ_SECONDS at most, and all of
# the TiDB side's work STATUS_TIDB_SECONDS (then what it has not read yet is reported as not read).
STATUS_READ_SECONDS = 5
STATUS_TIDB_SECONDS = 10


@dataclass
class _TiDBFindings:
    """What status learned of TiDB, filled in by a worker thread as it goes; read once it is done or given up."""

    server: str = ""  # what answered (empty: nothing yet)
    problem: str = ""  # why TiDB is unreachable (empty: it is not)
    runs: dict[str, tuple[dt.datetime, str]] | None = None  # None: no run log read
    has_run_log: bool | None = None  # None: not known yet
    counts: list[tuple[str, str, int | None]] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)  # tables the server did not count within its limit
    columnar: list[tuple[str, int, bool, str]] = field(default_factory=list)
    failure: Exception | None = None  # anything unexpected: raised by status itself, as before the thread
    done: bool = False


def _read_tidb(settings: Settings, found: _TiDBFindings) -> None:
    """Everything status shows of TiDB, on one connection whose every wait is bounded; the server itself stops a
    count that runs too long (an interactive connection), which is then shown as not counted."""
    cfg = settings.tidb
    tables = [(cfg.database, t) for t in TIDB_TABLES] + [(cfg.express_database, "express")]
    bound = min(STATUS_READ_SECONDS, cfg.read_timeout_seconds)
    try:
        with tidb.connection(settings, timeout=bound, interactive=True) as conn, conn.cursor() as cur:
            flavor = tidb.detect_flavor(conn)
            found.server = ("TiDB " if flavor.is_tidb else "") + flavor.version
            cur.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN (%s, %s)",
                (cfg.database, cfg.express_database),
            )
            present = {(schema, name) for schema, name in cur.fetchall()}
            found.has_run_log = (cfg.database, "pipeline_runs") in present
            if found.has_run_log:
                found.runs = runs.last_runs(conn, cfg.database)
            if flavor.is_tidb:
                found.columnar = [
                    (f"{cfg.database}.{r.table}", r.count, r.available, f"{r.progress:.0%}")
                    for r in tiflash.replicas(conn, cfg)
                ]
            for schema, name in tables:
                rows = None
                if (schema, name) in present:
                    try:
                        rows = int(tidb.scalar(cur, f"SELECT COUNT(*) FROM `{schema}`.`{name}`"))
                    except tidb.StatementStopped:
                        found.slow.append(f"{schema}.{name}")
                found.counts.append(("TiDB", f"{schema}.{name}", rows))
    except EcomError as exc:  # no answer, refused, no TLS, ...
        found.problem = str(exc)
    except pymysql.err.MySQLError as exc:  # the server failed a query of ours: it is not healthy
        found.problem = redact(f"TiDB at {cfg.host}:{cfg.port} failed a query ({exc})", [cfg.password])
    except Exception as exc:
        found.failure = exc
    finally:
        found.done = True


def _tidb_tables(settings: Settings, found: _TiDBFindings) -> tuple[tuple[str, str, str], list[str], Table]:
    """The TiDB side's row of Connections, the notes on its counts, and the Last runs table, from `found` as it
    is now (the worker may still be running, past its time)."""
    cfg = settings.tidb
    if found.problem:
        server = f"unreachable: {found.problem}"
    elif not found.server:  # still waiting for its first answer
        server = f"unreachable: TiDB at {cfg.host}:{cfg.port} did not answer within {STATUS_TIDB_SECONDS} s"
    else:
        server = found.server
    if found.runs is not None:
        steps = []
        for step in ("generate", "stream", "archive", "transform", "export"):
            finished, detail = found.runs.get(step, (None, "never run"))
            steps.append((step, str(finished or "—"), detail))
    elif server.startswith("unreachable"):
        steps = [("all", "—", "not read: TiDB is unreachable (see Connections)")]
    elif found.has_run_log is False:
        steps = [("all", "—", "no run log yet (run `ecom init`)")]
    else:
        steps = [("all", "—", f"not read: TiDB did not finish within {STATUS_TIDB_SECONDS} s")]
    notes = []
    if found.slow:
        notes.append(f"not counted within TiDB's limit for interactive reads: {', '.join(found.slow)}")
    if found.server and not found.done:
        notes.append(f"TiDB did not finish counting within {STATUS_TIDB_SECONDS} s")
    return ("TiDB side", cfg.address, server), notes, Table("Last runs", ["step", "finished at", "detail"], steps)


def status_tables(settings: Settings) -> list[Table]:
    started = time.monotonic()
    found = _TiDBFindings()
    # TiDB is read in a thread, so that status answers in STATUS_TIDB_SECONDS whatever the server does; the
    # warehouse is read meanwhile
    worker = threading.Thread(target=_read_tidb, args=(settings, found), name="ecom-status-tidb", daemon=True)
    worker.start()
    connections: list[tuple[str, str, str]] = []
    counts: list[tuple[str, str, int | None]] = []
    last_archive = marts = ""
    try:
        with warehouse.session(settings) as wcfg:
            conn = warehouse.connect(wcfg)
            connections.append(
                (
                    "warehouse",
                    f"target {wcfg.target}",
                    "fakesnow stand-in" if wcfg.is_standin else f"Snowflake account {wcfg.account}",
                )
            )
            try:
                cur = conn.cursor()
                for name in WAREHOUSE_TABLES:
                    schema, table = name.format(schema=wcfg.schema).split(".")
                    rows = None
                    if warehouse.table_exists(conn, wcfg, schema, table):
                        cur.execute(f"SELECT COUNT(*) FROM {wcfg.database}.{schema}.{table}")
                        rows = int(cur.fetchone()[0])
                    counts.append(("warehouse", f"{schema}.{table}", rows))
                if warehouse.table_exists(conn, wcfg, wcfg.raw_schema, "ARCHIVE_LOG"):
                    cur.execute("SELECT MIN(ARCHIVE_DATE), MAX(ARCHIVE_DATE), MAX(ARCHIVED_AT) FROM ARCHIVE_LOG")
                    first, last, at = cur.fetchone()
                    last_archive = f"days {first}..{last} in the warehouse, last written {at} UTC" if first else ""
                released = release.read(conn, wcfg)
                marts = "marts " + (released.describe() if released else "not released yet (run `ecom transform`)")
            finally:
                conn.close()
    except EcomError as exc:
        connections.append(("warehouse", settings.target or "default target", f"unavailable: {exc}"))
    worker.join(max(0.0, STATUS_TIDB_SECONDS - (time.monotonic() - started)))
    if found.failure is not None:
        raise found.failure
    tidb_connection, notes, last_runs = _tidb_tables(settings, found)
    note = "; ".join(text for text in [*notes, last_archive, marts] if text)
    tables = [
        Table("Connections", ["side", "where", "server"], [tidb_connection, *connections]),
        Table("Rows", ["side", "table", "rows"], list(found.counts) + counts, note=note),
        last_runs,
    ]
    if found.columnar:  # only TiDB has TiFlash, and only where replicas were made (TIDB_TIFLASH)
        tables.append(Table("TiFlash replicas", ["table", "replicas", "available", "progress"], list(found.columnar)))
    return tables
