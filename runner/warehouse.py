"""Connections to the Snowflake side: a real account, or the fakesnow stand-in when the profile says so."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from runner.config import Settings, WarehouseConfig
from runner.errors import EcomError, TransientError, redact

_standin_depth = 0


@contextlib.contextmanager
def session(settings: Settings) -> Iterator[WarehouseConfig]:
    """Make the warehouse reachable for the duration: for the stand-in, patch the connector to fakesnow.

    Re-entrant, so a command that archives and then runs dbt holds the stand-in's files once.
    """
    global _standin_depth
    cfg = settings.warehouse()
    if not cfg.is_standin or _standin_depth:
        _standin_depth += cfg.is_standin
        try:
            yield cfg
        finally:
            _standin_depth -= cfg.is_standin
        return
    import fakesnow

    # fakesnow logs every statement sqlglot cannot parse as a warning; it is noise for users.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="fakesnow")
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    try:
        patch = fakesnow.patch(db_path=str(settings.warehouse_dir))
        patch.__enter__()
    except Exception as exc:
        raise _standin_in_use(exc) from None
    _standin_depth += 1
    try:
        yield cfg
    finally:
        _standin_depth -= 1
        patch.__exit__(None, None, None)


def _standin_in_use(exc: Exception) -> Exception:
    """The stand-in's files take one process at a time: duckdb says so with an IOException about a lock."""
    if "lock" not in str(exc).lower():
        return exc
    return EcomError(
        "the local warehouse (fakesnow) is in use by another process",
        "wait for the other ecom command to finish (the stand-in allows one process at a time)",
    )


def connect(cfg: WarehouseConfig) -> Any:
    """Open a connector connection with RAW as the current schema, creating the schema if needed."""
    import snowflake.connector

    try:
        conn = snowflake.connector.connect(**cfg.connect_args())
    except snowflake.connector.errors.Error as exc:
        message = redact(getattr(exc, "raw_msg", None) or str(exc), [cfg.password])
        if isinstance(exc, snowflake.connector.errors.OperationalError):  # the network, not the login: retried
            raise TransientError(f"cannot reach Snowflake account {cfg.account!r} ({message})") from None
        raise EcomError(
            f"cannot connect to Snowflake account {cfg.account!r} as {cfg.user!r} ({message})",
            "check the SNOWFLAKE_* settings your profile reads",
        ) from None
    except Exception as exc:
        if cfg.is_standin:
            raise _standin_in_use(exc) from None
        raise
    cur = conn.cursor()
    try:
        if cfg.is_standin:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {cfg.database}")
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {cfg.database}.{cfg.raw_schema}")
        cur.execute(f"USE SCHEMA {cfg.database}.{cfg.raw_schema}")
    except snowflake.connector.errors.Error as exc:
        conn.close()
        raise EcomError(
            f"cannot use schema {cfg.database}.{cfg.raw_schema} ({redact(str(exc), [cfg.password])})",
            "create the database or grant the role access to it",
        ) from None
    return conn


def table_exists(conn: Any, cfg: WarehouseConfig, schema: str, table: str) -> bool:
    cur = conn.cursor()
    cur.execute(
        f"SELECT COUNT(*) FROM {cfg.database}.information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (schema.upper(), table.upper()),
    )
    return int(cur.fetchone()[0]) > 0


def write_pandas(cfg: WarehouseConfig, conn: Any, frame: Any, table: str) -> tuple[bool, int]:
    """Append a frame to an existing `table` of the RAW schema by the connector's columnar load (Parquet,
    PUT, COPY); returns whether it succeeded and the rows written."""
    from snowflake.connector import pandas_tools  # looked up at call time: the stand-in patches it

    ok, _, written, _ = pandas_tools.write_pandas(
        conn,
        frame,
        table,
        # write_pandas quotes names: pass them as Snowflake stores unquoted identifiers (upper case)
        database=cfg.database.upper(),
        schema=cfg.raw_schema.upper(),
        auto_create_table=False,
        overwrite=False,
        use_logical_type=True,
    )
    if cfg.is_standin:
        _standin_forget_calls(pandas_tools.write_pandas)
    return bool(ok), int(written)


def _standin_forget_calls(patched: Any) -> None:
    """fakesnow patches the connector's functions with mocks, which record the arguments of every call:
    each frame written would stay in memory until the session ends (memory growing with all the rows
    archived). Forget them; the mock keeps doing what it does."""
    reset = getattr(patched, "reset_mock", None)
    if reset is not None:
        reset()


def frames(cfg: WarehouseConfig, cur: Any, sql: str, params: Sequence[object] = ()) -> Iterator[Any]:
    """The result of a query as pandas frames, in the connector's Arrow batches (bounded memory)."""
    cur.execute(sql, params)
    if cfg.is_standin:  # fakesnow has no fetch_pandas_batches: callers bound their queries (e.g. by days)
        yield cur.fetch_pandas_all()
        return
    yield from cur.fetch_pandas_batches()
