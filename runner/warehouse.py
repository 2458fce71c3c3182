"""Connections to the Snowflake side: a real account, or the fakesnow stand-in when the profile says so."""

from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from runner.config import PASSWORD, Settings, WarehouseConfig
from runner.errors import EcomError, TransientError, redact

log = logging.getLogger("ecom")
_STATEMENT_TIMED_OUT = 630  # Snowflake: "Statement reached its statement or warehouse timeout … and was canceled"
_warned_password = False

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

    _warn_if_password(cfg)
    try:
        conn = snowflake.connector.connect(**cfg.connect_args())
    except snowflake.connector.errors.Error as exc:
        message = redact(getattr(exc, "raw_msg", None) or str(exc), cfg.secrets)
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
        # created only when missing: Snowflake checks CREATE SCHEMA on the database even for IF NOT EXISTS, a
        # privilege the pipeline's role need not have once docs/snowflake-setup.sql made the schema
        cur.execute(
            f"SELECT COUNT(*) FROM {cfg.database}.information_schema.schemata WHERE schema_name = %s",
            (cfg.raw_schema.upper(),),
        )
        found = cur.fetchone()
        if found is None or int(found[0]) == 0:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {cfg.database}.{cfg.raw_schema}")
        cur.execute(f"USE SCHEMA {cfg.database}.{cfg.raw_schema}")
    except snowflake.connector.errors.Error as exc:
        conn.close()
        raise EcomError(
            f"cannot use schema {cfg.database}.{cfg.raw_schema} ({redact(str(exc), cfg.secrets)})",
            "create the database or grant the role access to it",
        ) from None
    return conn


def _warn_if_password(cfg: WarehouseConfig) -> None:
    """Snowflake is ending single-factor password sign-in (MFA for people, none for service users): say so
    once per process; it still works where the account allows it."""
    global _warned_password
    if cfg.auth == PASSWORD and not _warned_password:
        _warned_password = True
        log.warning(
            "target %r signs in to Snowflake with a password, which Snowflake is blocking for service users; "
            "set SNOWFLAKE_PRIVATE_KEY_PATH (key pair) instead (see docs/snowflake-setup.sql)",
            cfg.target,
        )


def explain(exc: BaseException) -> EcomError | None:
    """A connector error a user can act on, as an EcomError (None: not one we know)."""
    try:
        from snowflake.connector.errors import Error
    except ImportError:  # pragma: no cover - the connector is a dependency
        return None
    if isinstance(exc, Error) and getattr(exc, "errno", None) == _STATEMENT_TIMED_OUT:
        return EcomError(
            "Snowflake stopped a statement that ran past its time limit (ECOM_STATEMENT_TIMEOUT_SECONDS, or the "
            "warehouse's own STATEMENT_TIMEOUT_IN_SECONDS); the step's transaction was rolled back",
            "raise the limit or use a larger warehouse, then rerun the step",
        )
    return None


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


def forget_result(conn: Any, cur: Any) -> None:
    """Drop the stand-in's copy of `cur`'s last result. fakesnow keeps every result (as Arrow) in a cache that
    lives as long as the session, so a session reading a big table in slices would end up holding all of it;
    a real connection keeps nothing (no-op)."""
    cache = getattr(conn, "results_cache", None)
    query_id = getattr(cur, "sfqid", None)
    if isinstance(cache, dict) and query_id is not None:
        cache.pop(query_id, None)


def result_frames(cfg: WarehouseConfig, conn: Any, sql: str, params: Sequence[object] = ()) -> Iterator[Any]:
    """`frames` on a cursor of its own, each result forgotten by the stand-in once handed over."""
    cur = conn.cursor()
    try:
        yield from frames(cfg, cur, sql, params)
    finally:
        forget_result(conn, cur)


def key_slices(cfg: WarehouseConfig, conn: Any, table: str, key: str, rows: int, per_slice: int) -> list[str]:
    """Predicates that cut `table` (of `rows` rows) into slices of about `per_slice` rows at most, by ranges of
    its whole-number column `key`, for the stand-in, which hands a result over all at once; every row is in
    exactly one slice (a NULL key in the first). A slice is larger only when one key alone has more rows.
    One slice (TRUE) on a real warehouse, whose results come in batches (`frames`), and for a table of
    `per_slice` rows or fewer.

    The edges come from counts of rows per range of keys (a GROUP BY of a few hundred groups: no sort, memory
    bounded whatever the table's size), each slice is then one range scan. Slicing by MOD of the key is far
    slower on DuckDB when the key is a NUMBER(19,0) (stored as a 128-bit decimal); LIMIT/OFFSET sorts the
    table again for every slice, and edges from ROW_NUMBER() hold the whole sort in memory."""
    if not cfg.is_standin or rows <= per_slice:
        return ["TRUE"]
    edges = _key_edges(conn, table, key, per_slice)
    if not edges:
        return ["TRUE"]
    slices = [f"({key} IS NULL OR {key} < {edges[0]})"]
    slices += [f"({key} >= {low} AND {key} < {high})" for low, high in itertools.pairwise(edges)]
    slices.append(f"{key} >= {edges[-1]}")
    return slices


_BUCKETS_PER_SLICE = 16


def _rows_of(conn: Any, sql: str) -> list[Any]:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return list(cur.fetchall())
    finally:
        forget_result(conn, cur)


def _key_edges(
    conn: Any, table: str, key: str, per_slice: int, low: int | None = None, high: int | None = None
) -> list[int]:
    """Sorted keys that cut the keys in [low, high) (all keys when None) into ranges of `per_slice` rows at
    most, or of one key: rows are counted per bucket of equal key width, consecutive buckets merged, and a
    bucket too big on its own is cut the same way, recursively."""
    within = f"{key} IS NOT NULL" if low is None else f"{key} >= {low} AND {key} < {high}"
    ((smallest, largest, count),) = _rows_of(
        conn, f"SELECT MIN({key}), MAX({key}), COUNT(*) FROM {table} WHERE {within}"
    )
    if not count or int(count) <= per_slice:
        return []
    first, end = int(smallest), int(largest) + 1
    width = max(1, -(-(end - first) // (_BUCKETS_PER_SLICE * -(-int(count) // per_slice))))
    buckets = _rows_of(
        conn,
        f"SELECT FLOOR(({key} - {first}) / {width}) AS BUCKET, COUNT(*) FROM {table} "
        f"WHERE {key} >= {first} AND {key} < {end} GROUP BY BUCKET",
    )
    edges: list[int] = []
    held = 0
    for bucket, rows in sorted((int(b), int(n)) for b, n in buckets):
        start = first + bucket * width
        if held and held + rows > per_slice:
            edges.append(start)
            held = 0
        if rows > per_slice and width > 1:  # cut this bucket alone, finer
            stop = min(start + width, end)
            edges += [start, *_key_edges(conn, table, key, per_slice, start, stop), stop]
        else:
            held += rows
    return sorted({edge for edge in edges if first < edge < end})
