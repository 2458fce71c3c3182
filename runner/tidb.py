"""Connections to the TiDB side and its versioned schema."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pymysql
import pymysql.cursors

from runner.config import Settings, TiDBConfig
from runner.errors import EcomError, TransientError, redact

SQL_DIR = Path(__file__).parent / "sql"
# MySQL error codes that mean "your credentials or names are wrong", as opposed to a server that is down.
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DATABASE = 1049
_UNKNOWN_TIME_ZONE = 1298
_UNKNOWN_SYSTEM_VARIABLE = 1193
# No server answered, or it went away, or it is full: these may pass, so the steps retry them.
_CANNOT_REACH = {0, 1040, 2003, 2005, 2006, 2013}


@dataclass(frozen=True)
class Flavor:
    """What kind of MySQL-protocol server we talk to: TiDB-only SQL is generated only for TiDB."""

    is_tidb: bool
    version: str
    has_tiflash: bool = False


def _utc_offset(settings: Settings) -> str:
    offset = dt.datetime.now(settings.zone).utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def connect(
    settings: Settings, database: str | None = None, *, streaming: bool = False
) -> pymysql.connections.Connection:
    """Open a connection; the session time zone is the business zone, so CURRENT_DATE is the business day."""
    cfg: TiDBConfig = settings.tidb
    try:
        conn = pymysql.connect(
            host=cfg.host,
            port=cfg.port,
            user=cfg.user,
            password=os.fsencode(cfg.password),  # UTF-8, as the server's clients send it (pymysql: latin-1)
            database=database,
            charset="utf8mb4",
            connect_timeout=10,
            local_infile=True,
            autocommit=True,
            ssl={"ca": cfg.ssl_ca} if cfg.ssl_ca else None,
            cursorclass=pymysql.cursors.SSCursor if streaming else pymysql.cursors.Cursor,
            init_command=f"SET time_zone = '{_utc_offset(settings)}'",
        )
        if streaming:  # a reader that pauses while each chunk is written to the warehouse must not be cut off
            _set_if_known(conn, "SET SESSION net_write_timeout = 3600")
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else 0
        message = redact(str(exc.args[1] if len(exc.args) > 1 else exc), [cfg.password])
        if code in _ACCESS_DENIED:
            raise EcomError(
                f"TiDB at {cfg.address} refused the login ({message})",
                "check TIDB_USER and TIDB_PASSWORD",
            ) from None
        if code == _UNKNOWN_TIME_ZONE:
            raise EcomError(
                f"the server rejects the UTC offset {_utc_offset(settings)} of ECOM_TIMEZONE={settings.timezone}",
                "pick a business time zone within the server's range (MariaDB: -12:59..+13:00)",
            ) from None
        if code == _UNKNOWN_DATABASE:
            raise EcomError(f"database {database!r} does not exist on {cfg.address}", "run `ecom init`") from None
        if code in _CANNOT_REACH:
            raise TransientError(
                f"cannot reach TiDB at {cfg.host}:{cfg.port} ({message})",
                "start a MySQL-protocol server there or set TIDB_HOST/TIDB_PORT (e.g. TiDB on port 4000)",
            ) from None
        raise EcomError(  # host not allowed, TLS required, an unsupported login method: retrying will not help
            f"TiDB at {cfg.address} refused the connection ({message})",
            "check TIDB_HOST, TIDB_USER and TIDB_SSL_CA (TiDB Cloud needs TLS)",
        ) from None
    return conn


def _set_if_known(conn: pymysql.connections.Connection, statement: str) -> None:
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(statement)
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] != _UNKNOWN_SYSTEM_VARIABLE:
            raise


@contextlib.contextmanager
def connection(settings: Settings, database: str | None = None) -> Iterator[pymysql.connections.Connection]:
    conn = connect(settings, database)
    try:
        yield conn
    finally:
        conn.close()


def start_snapshot(cur: pymysql.cursors.Cursor) -> None:
    """Begin a read-only view of one moment for every statement that follows, until COMMIT.

    REPEATABLE READ is set for this transaction because under READ COMMITTED (a server default some
    sites choose) WITH CONSISTENT SNAPSHOT would still give each statement a view of its own.
    """
    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")


def scalar(cur: pymysql.cursors.Cursor, sql: str, params: tuple[object, ...] = ()) -> Any:
    """The first column of the first row of a query that always returns one (COUNT, MAX, a function)."""
    cur.execute(sql, params)
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"expected one row from: {sql}")
    return row[0]


def detect_flavor(conn: pymysql.connections.Connection) -> Flavor:
    with conn.cursor() as cur:
        try:
            version = str(scalar(cur, "SELECT tidb_version()")).splitlines()[0]
        except pymysql.err.MySQLError:
            return Flavor(is_tidb=False, version=str(scalar(cur, "SELECT VERSION()")))
        try:
            stores = scalar(
                cur,
                "SELECT COUNT(*) FROM information_schema.tikv_store_status "
                "WHERE JSON_SEARCH(label, 'one', 'tiflash') IS NOT NULL",
            )
            has_tiflash = int(stores) > 0
        except pymysql.err.MySQLError:
            has_tiflash = False
    return Flavor(is_tidb=True, version=version, has_tiflash=has_tiflash)


def migration_files() -> list[Path]:
    return sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def render_migration(path: Path, cfg: TiDBConfig, flavor: Flavor) -> list[str]:
    """Render one versioned SQL file into its statements for this server (TiDB-only DDL only on TiDB)."""
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(path.read_text())
    text = template.render(
        db=cfg.database, express_db=cfg.express_database, tidb=flavor.is_tidb, tiflash=flavor.has_tiflash
    )
    statements = []
    for chunk in text.split(";\n"):
        code = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--")).strip()
        if code:
            statements.append(code.rstrip(";"))
    return statements


def init_schema(settings: Settings) -> list[str]:
    """Apply every versioned SQL file not yet applied; each file is itself idempotent. Returns what ran."""
    cfg = settings.tidb
    with connection(settings) as conn:
        flavor = detect_flavor(conn)
        applied: set[str] = set()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{cfg.database}`")
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS `{cfg.database}`.schema_migrations ("
                " version VARCHAR(100) NOT NULL PRIMARY KEY, applied_at DATETIME NOT NULL)"
            )
            cur.execute(f"SELECT version FROM `{cfg.database}`.schema_migrations")
            applied = {row[0] for row in cur.fetchall()}
            ran: list[str] = []
            for path in migration_files():
                if path.name in applied:
                    continue
                for stmt in render_migration(path, cfg, flavor):
                    cur.execute(stmt)
                cur.execute(f"INSERT INTO `{cfg.database}`.schema_migrations VALUES (%s, NOW())", (path.name,))
                ran.append(path.name)
    return ran


def ping(settings: Settings) -> Flavor:
    with connection(settings) as conn:
        return detect_flavor(conn)


def require_schema(conn: pymysql.connections.Connection, cfg: TiDBConfig) -> None:
    """The business tables exist and every versioned SQL file of this code has been applied."""
    with conn.cursor(pymysql.cursors.Cursor) as cur:
        sql = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'orders'"
        if scalar(cur, sql, (cfg.database,)) == 0:
            raise EcomError(f"database {cfg.database!r} has no schema yet", "run `ecom init`")
        cur.execute(f"SELECT version FROM `{cfg.database}`.schema_migrations")
        missing = sorted({path.name for path in migration_files()} - {row[0] for row in cur.fetchall()})
    if missing:
        raise EcomError(
            f"the schema of {cfg.database!r} is older than this code ({', '.join(missing)} not applied)",
            "run `ecom init`",
        )
