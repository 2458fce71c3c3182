"""TiFlash replicas (TiDB's columnar copies) for the real-time analysis tables, on every TiDB tier.

Whether a cluster has TiFlash is not asked of `information_schema.tikv_store_status`: TiDB Cloud Starter and
Essential do not support that table, and reading it there failed silently, so replicas were never made. The
replica is asked for instead (`TIDB_TIFLASH`): `auto` asks and, where the cluster cannot have one, says so in
a warning line and goes on (the analysis then reads TiKV); `on` makes that an error; `off` never asks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pymysql

from runner.config import TiDBConfig
from runner.errors import EcomError

log = logging.getLogger("ecom")
ANALYSIS_TABLES = ("orders", "items")  # what today's dashboard scans and joins


@dataclass(frozen=True)
class Replica:
    """One table's TiFlash replica, as `information_schema.tiflash_replica` reports it."""

    table: str
    count: int
    available: bool
    progress: float  # 0..1: how much of the table the replica has caught up with


def replica_statements(cfg: TiDBConfig, tables: tuple[str, ...] = ANALYSIS_TABLES) -> list[str]:
    return [f"ALTER TABLE `{cfg.database}`.`{table}` SET TIFLASH REPLICA 1" for table in tables]


def progress_query() -> str:
    return (
        "SELECT TABLE_NAME, REPLICA_COUNT, AVAILABLE, PROGRESS FROM information_schema.tiflash_replica "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME"
    )


def replicas(conn: pymysql.connections.Connection, cfg: TiDBConfig) -> list[Replica]:
    with conn.cursor(pymysql.cursors.Cursor) as cur:
        cur.execute(progress_query(), (cfg.database,))
        return [Replica(str(t), int(n), bool(a), float(p or 0)) for t, n, a, p in cur.fetchall()]


def cannot_have_replica(exc: BaseException) -> bool:
    """TiDB refused a replica because the cluster has no TiFlash for it (no TiFlash nodes, a tier without
    them), as opposed to a failure to report (a lost connection, no privilege)."""
    if not isinstance(exc, pymysql.err.MySQLError) or not exc.args:
        return False
    message = str(exc.args[-1]).lower()
    return "tiflash" in message and any(
        hint in message for hint in ("server count", "store count", "not support", "unsupported", "no available")
    )


def ensure_replicas(conn: pymysql.connections.Connection, cfg: TiDBConfig, is_tidb: bool) -> list[str]:
    """Ask for a replica of each analysis table that has none; the statements that ran."""
    if cfg.tiflash == "off":
        return []
    if not is_tidb:
        if cfg.tiflash == "on":
            raise EcomError("TIDB_TIFLASH=on, but the server is not TiDB", "set TIDB_TIFLASH=auto or off")
        return []
    have = {replica.table for replica in replicas(conn, cfg) if replica.count > 0}
    ran: list[str] = []
    with conn.cursor(pymysql.cursors.Cursor) as cur:
        for table, statement in zip(ANALYSIS_TABLES, replica_statements(cfg), strict=True):
            if table in have:
                continue
            try:
                cur.execute(statement)
            except pymysql.err.MySQLError as exc:
                if cfg.tiflash == "auto" and cannot_have_replica(exc):
                    log.warning(
                        "no TiFlash replica: TiDB says %s; today's analysis reads TiKV (TIDB_TIFLASH=off stops asking)",
                        _said(exc),
                    )
                    return ran
                fix = (
                    "add TiFlash nodes to the cluster, or set TIDB_TIFLASH=auto (go on without) or off"
                    if cfg.tiflash == "on"
                    else "grant ALTER on the analysis tables (docs/tidb-setup.sql), or set TIDB_TIFLASH=off"
                )
                raise EcomError(f"TiDB refused a TiFlash replica of {table} ({_said(exc)})", fix) from None
            ran.append(statement)
    return ran


def _said(exc: Any) -> str:
    return " ".join(str(exc.args[-1]).split()) if exc.args else type(exc).__name__
