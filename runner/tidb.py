"""Connections to the TiDB side and its versioned schema."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pymysql
import pymysql.cursors

from runner import tiflash
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
# TLS. Access denied to a login (as opposed to a database): also the answer to a REQUIRE SSL account in plain text.
_ACCESS_DENIED_LOGIN = 1045
_REQUIRES_TLS_HINT = (
    "; the account may also require TLS (REQUIRE SSL): then set TIDB_SSL_CA to the server's CA bundle (PEM)"
)
_TLS_NOT_OFFERED = 2026  # CR_SSL_CONNECTION_ERROR: pymysql wanted TLS, the server's greeting offers none
_SECURE_TRANSPORT_REQUIRED = 3159  # MySQL 8 / TiDB with require_secure_transport (MariaDB answers 1045)
_NAME_MISMATCH = {62, 64}  # OpenSSL: X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_OUT_OF_DATE = {9, 10}  # OpenSSL: X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
# The connection dropped during the handshake: that may pass, like any dropped connection.
_TLS_CUT_OFF = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
# What pymysql raises for a read that failed (2013), as the retries know it; a write that failed is 2006.
_SERVER_LOST = 2013
# A statement stopped by the server's own time limit: MariaDB's max_statement_time, MySQL/TiDB's max_execution_time.
_STATEMENT_STOPPED = {1969, 3024}
READ_TIMEOUT_SETTING = "TIDB_READ_TIMEOUT_SECONDS"
LONG_STATEMENT_SETTING = "TIDB_LONG_STATEMENT_SECONDS"


class NoAnswer(TransientError, pymysql.err.OperationalError):
    """The server sent nothing (or took nothing we sent) for longer than the connection's bound: a hung server,
    a stalled proxy or network. pymysql has closed the connection. A transient failure, retried like any lost
    connection; also a pymysql OperationalError 2013, for code that handles those."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what, fix)
        self.args = (_SERVER_LOST, what)


class StatementStopped(EcomError, pymysql.err.OperationalError):
    """An interactive read that the server stopped at its own time limit (`connect(interactive=True)`). The
    connection stays usable. Not retried: the same query would be as slow."""

    def __init__(self, what: str, fix: str = "", code: int = 3024) -> None:
        super().__init__(what, fix)
        self.args = (code, what)


class _Connection(pymysql.connections.Connection):
    """pymysql's connection, whose reads and writes that time out raise NoAnswer (naming the server, the bound
    and the setting it comes from), and whose statements stopped by the server's time limit raise
    StatementStopped. Timeouts are pymysql's own: `read_timeout`/`write_timeout`, which it applies before each
    packet from `_read_timeout`/`_write_timeout` (see `bounded`)."""

    _read_timeout: float | None
    _write_timeout: float | None
    _result: Any  # pymysql's result being read (MySQLResult), None between statements

    def __init__(self, *, bound_by: str | None, long_statement_seconds: float, **kwargs: Any) -> None:
        self.bound_by = bound_by  # the setting the read/write bound comes from, for the message
        self.long_statement_seconds = long_statement_seconds
        self.statement_seconds: float | None = None  # the server-side limit, when one is set
        super().__init__(**kwargs)

    def _read_packet(self, *args: Any) -> Any:
        try:
            return super()._read_packet(*args)
        except pymysql.err.OperationalError as exc:
            if not self.open and self._result is not None:
                # the connection is gone: closing the cursor must not read the rest of its rows (pymysql would
                # raise AttributeError from the closed socket, hiding why the connection was lost)
                self._result.unbuffered_active = False
            explained = self._explained(exc, self._read_timeout)
            if explained is exc:
                raise
            raise explained from None

    def _write_bytes(self, data: bytes) -> None:
        try:
            super()._write_bytes(data)  # type: ignore[misc]
        except pymysql.err.OperationalError as exc:
            explained = self._explained(exc, self._write_timeout)
            if explained is exc:
                raise
            raise explained from None

    def _explained(self, exc: pymysql.err.OperationalError, bound: float | None) -> pymysql.err.OperationalError:
        if isinstance(exc, NoAnswer | StatementStopped):
            return exc
        where = f"TiDB at {self.host}:{self.port}"
        if isinstance(exc.__context__, TimeoutError) and bound is not None:  # the socket's timeout, not a reset
            setting = f" ({self.bound_by})" if self.bound_by else ""
            return NoAnswer(
                f"{where} did not answer within {bound:g} s{setting}",
                "check the server and the network to it"
                + (f"; a statement that legitimately runs longer needs a higher {self.bound_by}" if setting else ""),
            )
        code = exc.args[0] if exc.args else 0
        if code in _STATEMENT_STOPPED and self.statement_seconds is not None:
            raise_it = f", or raise {self.bound_by} (the limit is 1 s under it)" if self.bound_by else ""
            return StatementStopped(
                f"{where} stopped a query that ran past {self.statement_seconds:g} s, its limit for interactive reads",
                f"try again when the server is less busy{raise_it}",
                code,
            )
        return exc


@dataclass(frozen=True)
class Flavor:
    """What kind of MySQL-protocol server we talk to: TiDB-only SQL is generated only for TiDB."""

    is_tidb: bool
    version: str


def _utc_offset(settings: Settings) -> str:
    offset = dt.datetime.now(settings.zone).utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def trust_store(cfg: TiDBConfig) -> str | None:
    """The CA bundle that verifies the server's certificate, or None for plain text.

    TIDB_SSL_CA when set; for a TiDB Cloud host without it, the system's bundle (what OpenSSL uses, which
    honours SSL_CERT_FILE), else certifi's. Any other host without TIDB_SSL_CA: no TLS. An unverified
    "encrypted anyway" session (pymysql's own default when a server offers TLS) is not used: TLS here always
    means the chain and the host name were checked, and an account that requires TLS gets a message instead.
    """
    if cfg.ssl_ca:
        return cfg.ssl_ca
    if not cfg.is_tidb_cloud:
        return None
    system = ssl.get_default_verify_paths().cafile  # None when that file does not exist
    if system:
        return system
    try:
        import certifi
    except ImportError:
        raise EcomError(
            f"TIDB_HOST={cfg.host} is a TiDB Cloud host, which needs TLS, and this system has no CA bundle",
            "set TIDB_SSL_CA to a CA bundle (PEM), e.g. /etc/ssl/certs/ca-certificates.crt",
        ) from None
    return str(certifi.where())


def connect_kwargs(settings: Settings, database: str | None = None, *, streaming: bool = False) -> dict[str, Any]:
    """pymysql.connect's arguments for these settings (no I/O but finding the system's CA bundle)."""
    cfg: TiDBConfig = settings.tidb
    ca = trust_store(cfg)
    tls: dict[str, Any] = (
        {"ssl_ca": ca, "ssl_verify_cert": True, "ssl_verify_identity": True}  # chain and host name
        if ca
        else {"ssl_disabled": True}
    )
    return {
        "host": cfg.host,
        "port": cfg.port,
        "user": cfg.user,
        "password": os.fsencode(cfg.password),  # UTF-8, as the server's clients send it (pymysql: latin-1)
        "database": database,
        "charset": "utf8mb4",
        "connect_timeout": 10,
        # a server that accepts and never answers must not hang us: no read, the handshake's included, waits
        # longer than this for a byte (see `patient` for the statements that are silent by design)
        "read_timeout": cfg.read_timeout_seconds,
        "write_timeout": cfg.read_timeout_seconds,
        "local_infile": True,
        "autocommit": True,
        **tls,
        "cursorclass": pymysql.cursors.SSCursor if streaming else pymysql.cursors.Cursor,
        "init_command": f"SET time_zone = '{_utc_offset(settings)}'",
    }


def connect(
    settings: Settings,
    database: str | None = None,
    *,
    streaming: bool = False,
    timeout: float | None = None,
    interactive: bool = False,
) -> pymysql.connections.Connection:
    """Open a connection; the session time zone is the business zone, so CURRENT_DATE is the business day.

    Each read and write on it waits at most TIDB_READ_TIMEOUT_SECONDS for the server (NoAnswer past it);
    `timeout` replaces that bound, and the connect's, for short statements only (a lease's, `ecom status`).
    `interactive`: reads a person waits for (status, the serving commands); the server itself stops a query
    1 s before the client would give up (StatementStopped), so a slow query does not run on unseen.
    """
    cfg: TiDBConfig = settings.tidb
    kwargs = connect_kwargs(settings, database, streaming=streaming)
    if timeout is not None:
        kwargs.update(read_timeout=timeout, write_timeout=timeout, connect_timeout=min(10, max(1, int(timeout))))
    ca: str | None = kwargs.get("ssl_ca")
    try:
        conn = _Connection(
            bound_by=None if timeout is not None else READ_TIMEOUT_SETTING,
            long_statement_seconds=cfg.long_statement_seconds,
            **kwargs,
        )
    except (NoAnswer, StatementStopped):
        raise
    except pymysql.err.OperationalError as exc:
        raise _connect_error(exc, settings, database, ca) from None
    except OSError as exc:  # pymysql loads the CA bundle before it connects (connect errors are wrapped above)
        if ca is None:
            raise
        reason = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) else "no PEM certificate in it"
        raise EcomError(
            f"the CA bundle {_ca_source(cfg, ca)} cannot be loaded ({reason})",
            "point TIDB_SSL_CA at the CA bundle (PEM) of your TiDB",
        ) from None
    try:
        if streaming:  # a reader that pauses while each chunk is written to the warehouse must not be cut off
            _set_if_known(conn, "SET SESSION net_write_timeout = 3600")
        if interactive:
            _limit_statements(conn, max(1.0, float(kwargs["read_timeout"]) - 1))
    except BaseException:
        conn.close()
        raise
    return conn


def _limit_statements(conn: _Connection, seconds: float) -> None:
    """The server's own limit on each read of the session: MySQL and TiDB know max_execution_time (ms, SELECT
    only), MariaDB max_statement_time (s)."""
    if not _set_if_known(conn, f"SET SESSION max_execution_time = {int(seconds * 1000)}"):
        _set_if_known(conn, f"SET SESSION max_statement_time = {seconds:g}")
    conn.statement_seconds = seconds


def _connect_error(
    exc: pymysql.err.OperationalError, settings: Settings, database: str | None, ca: str | None
) -> EcomError:
    """What to tell the user about a connection that failed (a TransientError where a retry may help)."""
    cfg = settings.tidb
    code = exc.args[0] if exc.args else 0
    message = redact(str(exc.args[1] if len(exc.args) > 1 else exc), [cfg.password])
    tls_error = _tls_error(exc, cfg, ca)
    if tls_error is not None:  # a certificate or TLS set-up that does not match: retrying will not help
        return tls_error
    if code in _ACCESS_DENIED:
        # MariaDB/MySQL answer a plain-text login to a REQUIRE SSL account with 1045 too
        hint = _REQUIRES_TLS_HINT if code == _ACCESS_DENIED_LOGIN and ca is None else ""
        return EcomError(
            f"TiDB at {cfg.address} refused the login ({message})", f"check TIDB_USER and TIDB_PASSWORD{hint}"
        )
    if code == _UNKNOWN_TIME_ZONE:
        return EcomError(
            f"the server rejects the UTC offset {_utc_offset(settings)} of ECOM_TIMEZONE={settings.timezone}",
            "pick a business time zone within the server's range (MariaDB: -12:59..+13:00)",
        )
    if code == _UNKNOWN_DATABASE:
        return EcomError(f"database {database!r} does not exist on {cfg.address}", "run `ecom init`")
    if code in _CANNOT_REACH:
        return TransientError(
            f"cannot reach TiDB at {cfg.host}:{cfg.port} ({message})",
            "start a MySQL-protocol server there or set TIDB_HOST/TIDB_PORT (e.g. TiDB on port 4000)",
        )
    return EcomError(  # host not allowed, TLS required, an unsupported login method: retrying will not help
        f"TiDB at {cfg.address} refused the connection ({message})",
        "check TIDB_HOST, TIDB_USER and TIDB_SSL_CA (TiDB Cloud needs TLS)",
    )


def _ca_source(cfg: TiDBConfig, ca: str) -> str:
    return f"TIDB_SSL_CA={ca}" if cfg.ssl_ca else f"{ca} (the system's, as TIDB_HOST is a TiDB Cloud host)"


def _tls_error(exc: pymysql.err.OperationalError, cfg: TiDBConfig, ca: str | None) -> EcomError | None:
    """The error to report when `exc` is a TLS failure (pymysql wraps the ssl module's as 2003), else None."""
    where = f"TiDB at {cfg.host}:{cfg.port}"
    code = exc.args[0] if exc.args else 0
    if code == _SECURE_TRANSPORT_REQUIRED:
        return EcomError(f"{where} accepts TLS connections only", "set TIDB_SSL_CA to the server's CA bundle (PEM)")
    if ca is None:  # plain text: nothing TLS can have failed
        return None
    if code == _TLS_NOT_OFFERED:
        if cfg.ssl_ca:
            return EcomError(
                f"{where} does not offer TLS, and TIDB_SSL_CA is set",
                "enable TLS on the server (ssl_cert, ssl_key), or unset TIDB_SSL_CA to connect in plain text",
            )
        return EcomError(
            f"{where} does not offer TLS, which every TiDB Cloud endpoint does",
            "check TIDB_HOST and TIDB_PORT (TiDB Cloud: port 4000)",
        )
    original = getattr(exc, "original_exception", None)
    if isinstance(original, ssl.SSLCertVerificationError):
        reason = original.verify_message or original.reason or "certificate verify failed"
        if original.verify_code in _NAME_MISMATCH:
            return EcomError(
                f"the TLS certificate of {where} does not name the host {cfg.host!r} ({reason.rstrip('.')})",
                "set TIDB_HOST to a host name the server's certificate lists (not an alias or an unlisted IP)",
            )
        if original.verify_code in _OUT_OF_DATE:
            return EcomError(
                f"the TLS certificate of {where} is out of date ({reason})",
                "renew the server's certificate, or check this machine's clock",
            )
        return EcomError(
            f"the TLS certificate of {where} does not verify against {_ca_source(cfg, ca)} ({reason})",
            "point TIDB_SSL_CA at the CA bundle (PEM) that issued the server's certificate",
        )
    if isinstance(original, ssl.SSLError) and not isinstance(original, _TLS_CUT_OFF):
        return EcomError(
            f"TLS with {where} failed ({original.reason or original})",
            "check that the server offers TLS 1.2 or later and that TIDB_SSL_CA is its CA bundle",
        )
    return None


def _set_if_known(conn: pymysql.connections.Connection, statement: str) -> bool:
    """Run a SET of a session variable; False where the server does not know the variable."""
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(statement)
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] != _UNKNOWN_SYSTEM_VARIABLE:
            raise
        return False
    return True


@contextlib.contextmanager
def bounded(conn: pymysql.connections.Connection, seconds: float, setting: str | None = None) -> Iterator[None]:
    """Bound each read and write of the block's statements by `seconds` instead of the connection's own bound
    (`setting`: where the number comes from, for the message), then restore it.

    pymysql applies `_read_timeout`/`_write_timeout` (private attributes) to its socket before each packet:
    tests/test_hang.py proves against a stalled proxy that setting them still widens and narrows the bound.
    """
    if not isinstance(conn, _Connection):
        raise TypeError("bounded() takes a connection made by runner.tidb.connect")
    before = conn._read_timeout, conn._write_timeout, conn.bound_by
    conn._read_timeout = conn._write_timeout = seconds
    conn.bound_by = setting
    try:
        yield
    finally:
        conn._read_timeout, conn._write_timeout, conn.bound_by = before


def patient(
    conn: pymysql.connections.Connection, seconds: float | None = None
) -> contextlib.AbstractContextManager[None]:
    """Let the block's statements run up to `seconds` (default TIDB_LONG_STATEMENT_SECONDS) with the server
    sending nothing: for statements that are silent by design until they finish (DDL, LOAD DATA, an aggregate
    over a whole table). Wrap the execute *and* the fetch of its result: a server may send a result's header
    at once and its row only once computed. Streaming reads need no patience: their rows come continuously.
    Never narrower than the connection's own bound."""
    if not isinstance(conn, _Connection):
        raise TypeError("patient() takes a connection made by runner.tidb.connect")
    wide = max(seconds or conn.long_statement_seconds, conn._read_timeout or 0)
    return bounded(conn, wide, LONG_STATEMENT_SETTING if seconds is None else None)


@contextlib.contextmanager
def connection(
    settings: Settings, database: str | None = None, *, timeout: float | None = None, interactive: bool = False
) -> Iterator[pymysql.connections.Connection]:
    conn = connect(settings, database, timeout=timeout, interactive=interactive)
    try:
        yield conn
    finally:
        conn.close()


@dataclass
class SnapshotClock:
    """How long a snapshot (a transaction) has been open, against ECOM_MAX_TRANSACTION_SECONDS: TiDB Cloud
    Starter ends a transaction at 30 minutes. Runs are sized to stay well within it; `check` stops one that
    does not, with the fix, rather than let the server kill it."""

    settings: Settings
    what: str
    started: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        limit = self.settings.max_transaction_seconds
        if time.monotonic() - self.started > limit:
            raise EcomError(
                f"{self.what} kept its TiDB snapshot open longer than ECOM_MAX_TRANSACTION_SECONDS={limit}",
                "run it over fewer days (--from/--to), or raise the limit below your TiDB's own "
                "(TiDB Cloud Starter: 30 minutes); nothing was written",
            )


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
    return Flavor(is_tidb=True, version=version)


def migration_files() -> list[Path]:
    return sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def render_migration(path: Path, cfg: TiDBConfig, flavor: Flavor) -> list[str]:
    """Render one versioned SQL file into its statements for this server (TiDB-only DDL only on TiDB)."""
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(path.read_text())
    text = template.render(db=cfg.database, express_db=cfg.express_database, tidb=flavor.is_tidb)
    statements = []
    for chunk in text.split(";\n"):
        code = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--")).strip()
        if code:
            statements.append(code.rstrip(";"))
    return statements


def init_schema(settings: Settings) -> list[str]:
    """Apply every versioned SQL file not yet applied (each file is itself idempotent), then ask for the
    TiFlash replicas (runner/tiflash.py) the analysis tables lack. Returns what ran."""
    cfg = settings.tidb
    with connection(settings) as conn:
        flavor = detect_flavor(conn)
        applied: set[str] = set()
        # DDL is silent until done, and on TiDB it may queue behind other DDL (an index built on a big table)
        with patient(conn), conn.cursor() as cur:
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
            ran += tiflash.ensure_replicas(conn, cfg, flavor.is_tidb)
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
