"""Whether TiDB's business data may be read as a whole dataset: the steps that copy or model it (archive,
verify, transform, export) ask `require_whole_dataset` first.

- `dataset_info` has its row: `generate` swaps it in together with exactly the rows it describes (one RENAME
  TABLE), so the data is whole.
- No row, and no business rows either: nothing to read. Archiving it would file empty days in the warehouse.
- No row, rows, and every secondary index in place: a shop's own TiDB, fed by its apps, where nothing was
  generated. Accepted.
- No row, rows, and secondary indexes missing: what an earlier version of `generate` left when it was killed
  mid-load (it emptied the live tables, dropped their indexes, and loaded in place). Refused.
"""

from __future__ import annotations

import pymysql

from loaders import generate
from runner import tidb
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError

BUSINESS_TABLES = ("users", "items", "orders", "express")


def require_whole_dataset(conn: pymysql.connections.Connection, cfg: TiDBConfig) -> None:
    """Refuse business data that its completeness record does not vouch for (see the module)."""
    with conn.cursor(pymysql.cursors.Cursor) as cur:  # buffered, also on a streaming connection
        if tidb.scalar(cur, f"SELECT COUNT(*) FROM `{cfg.database}`.dataset_info"):
            return
        holding = [table for table in BUSINESS_TABLES if _has_rows(cur, cfg, table)]
    if not holding:
        raise EcomError(
            f"TiDB holds no business data (no users, items, orders or shipments in {cfg.database!r})",
            "run `ecom generate` first (or let the shop's apps write it)",
        )
    missing = generate.missing_secondary_indexes(conn, cfg.database, cfg.express_database)
    if missing:
        raise EcomError(
            f"the business data in {cfg.database!r} is a partial load: it lacks the indexes {', '.join(missing)} "
            "and the dataset record that a finished `ecom generate` leaves (one was interrupted)",
            "run `ecom generate` again",
        )


def require_whole(settings: Settings) -> None:
    """`require_whole_dataset` on a connection of its own."""
    with tidb.connection(settings, settings.tidb.database) as conn:
        tidb.require_schema(conn, settings.tidb)
        require_whole_dataset(conn, settings.tidb)


def _has_rows(cur: pymysql.cursors.Cursor, cfg: TiDBConfig, table: str) -> bool:
    schema = cfg.express_database if table == "express" else cfg.database
    cur.execute(f"SELECT 1 FROM `{schema}`.`{table}` LIMIT 1")
    return cur.fetchone() is not None
