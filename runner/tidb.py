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
        "local_infile": True,
        "autocommit": True,
        **tls,
        "cursorclass": pymysql.cursors.SSCursor if streaming else pymysql.cursors.Cursor,
        "init_command": f"SET time_zone = '{_utc_offset(settings)}'",
    }


def connect(
    settings: Settings, database: str | None = None, *, streaming: bool = False, timeout: float | None = None
) -> pymysql.connections.Connection:
    """Open a connection; the session time zone is the business zone, so CURRENT_DATE is the business day.
    `timeout` bounds each read and write on it (for short statements only, such as a lease's)."""
    cfg: TiDBConfig = settings.tidb
    kwargs = connect_kwargs(settings, database, streaming=streaming)
    if timeout is not None:
        kwargs.update(read_timeout=timeout, write_timeout=timeout, connect_timeout=min(10, max(1, int(timeout))))
    ca: str | None = kwargs.get("ssl_ca")
    try:
        conn = pymysql.connect(**kwargs)
        if streaming:  # a reader that pauses while each chunk is written to the warehouse must not be cut off
            _set_if_known(conn, "SET SESSION net_write_timeout = 3600")
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else 0
        message = redact(str(exc.args[1] if len(exc.args) > 1 else exc), [cfg.password])
        tls_error = _tls_error(exc, cfg, ca)
        if tls_error is not None:  # a certificate or TLS set-up that does not match: retrying will not help
            raise tls_error from None
        if code in _ACCESS_DENIED:
            # MariaDB/MySQL answer a plain-text login to a REQUIRE SSL account with 1045 too
            hint = _REQUIRES_TLS_HINT if code == _ACCESS_DENIED_LOGIN and ca is None else ""
            raise EcomError(
                f"TiDB at {cfg.address} refused the login ({message})", f"check TIDB_USER and TIDB_PASSWORD{hint}"
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
    except OSError as exc:  # pymysql loads the CA bundle before it connects (connect errors are wrapped above)
        if ca is None:
            raise
        reason = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) else "no PEM certificate in it"
        raise EcomError(
            f"the CA bundle {_ca_source(cfg, ca)} cannot be loaded ({reason})",
            "point TIDB_SSL_CA at the CA bundle (PEM) of your TiDB",
        ) from None
    return conn


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


def _set_if_known(conn: pymysql.connections.Connection, statement: str) -> None:
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(statement)
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] != _UNKNOWN_SYSTEM_VARIABLE:
            raise


@contextlib.contextmanager
def connection(
    settings: Settings, database: str | None = None, *, timeout: float | None = None
) -> Iterator[pymysql.connections.Connection]:
    conn = connect(settings, database, timeout=timeout)
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
