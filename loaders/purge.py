"""Cold purge: delete from TiDB the old days of orders and expresses that the warehouse is proven to hold.

Two proofs stand before any row is deleted. A day is purged only if `verify` finds it equal on both
sides. Then each batch (ids locked with FOR UPDATE) is deleted only if the warehouse holds exactly
those rows, compared by fingerprint: a row that arrived after the verification, or a batch the
warehouse does not hold exactly, stops the purge with its transaction rolled back. A day is recorded
as 'purging' before its first batch and 'purged' after its last, so a killed purge resumes, and the
archive refuses to overwrite a purged day with the nothing that TiDB now holds.

TiDB's TTL tables are not used: TTL deletes by age alone and cannot wait for a proof.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from loaders import fingerprint
from loaders.archive import Extract, exclusive, extracts, to_frame
from loaders.verify import Purge, purges, verify
from runner import failpoints, tidb, warehouse
from runner.config import Settings, TiDBConfig, WarehouseConfig
from runner.errors import EcomError

BATCH_ORDERS = 1000
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PurgeResult:
    cutoff: dt.date  # days before it were candidates
    purged: list[dt.date]
    orders: int
    express: int
    kept: list[dt.date]  # old days not proven equal in the warehouse: left in TiDB


def purge(settings: Settings, older_than_days: int, progress: Progress | None = None) -> PurgeResult:
    """Delete the days older than `older_than_days` from TiDB, where the warehouse is proven to hold them."""
    if older_than_days < 1:
        raise EcomError(f"--purge-older-than {older_than_days} is less than one day", "keep at least one day")
    report = progress or (lambda _table, _done, _total: None)
    cfg = settings.tidb
    cutoff = settings.today() - dt.timedelta(days=older_than_days)
    by_table = {e.table: e for e in extracts(cfg.database, cfg.express_database)}
    deleted = {"ORDERS": 0, "EXPRESS": 0}
    with warehouse.session(settings) as cfg_w:
        conn = tidb.connect(settings, cfg.database)
        try:
            tidb.require_schema(conn, cfg)
            with exclusive(conn, settings, cfg_w):
                started = purges(conn, cfg.database, dt.date.min, cutoff - dt.timedelta(days=1))
                candidates = [day for day in _days_with_orders(conn, cfg.database, cutoff) if day not in started]
                proven: list[dt.date] = []
                if candidates:
                    check = verify(settings, candidates[0], candidates[-1], daily_only=True)
                    proven = [day for day in check.proven_days() if day in set(candidates)]
                    prints = {(c.day, c.table): c.warehouse for c in check.checks}
                    for day in proven:
                        _record(conn, cfg.database, day, {t: prints[(day, t)] for t in ("ORDERS", "EXPRESS")})
                todo = sorted([day for day, p in started.items() if p.state == "purging"] + proven)
                wconn = warehouse.connect(cfg_w)
                try:
                    for day in todo:
                        orders, express = _delete_day(conn, cfg, wconn, cfg_w, by_table, day)
                        deleted["ORDERS"] += orders
                        deleted["EXPRESS"] += express
                        _finish(conn, cfg.database, day)
                        report("purged days", todo.index(day) + 1, len(todo))
                finally:
                    wconn.close()
        finally:
            conn.close()
    kept = [day for day in candidates if day not in set(proven)]
    return PurgeResult(cutoff, todo, deleted["ORDERS"], deleted["EXPRESS"], kept)


def _days_with_orders(conn: Any, database: str, cutoff: dt.date) -> list[dt.date]:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT DISTINCT DATE(created_at) FROM `{database}`.orders WHERE created_at < %s ORDER BY 1",
            (dt.datetime.combine(cutoff, dt.time()),),
        )
        return [row[0] for row in cur.fetchall()]


def _record(conn: Any, database: str, day: dt.date, prints: dict[str, fingerprint.Fingerprint]) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO `{database}`.archive_purges (day, orders, express, amount, checksum, state, started_at) "
            "VALUES (%s, %s, %s, %s, %s, 'purging', NOW())",
            (day, *Purge.encode(prints)),
        )


def _finish(conn: Any, database: str, day: dt.date) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE `{database}`.archive_purges SET state = 'purged', purged_at = NOW() WHERE day = %s", (day,)
        )


def _delete_day(
    conn: Any, cfg: TiDBConfig, wconn: Any, cfg_w: WarehouseConfig, by_table: dict[str, Extract], day: dt.date
) -> tuple[int, int]:
    """Delete one day in batches; each batch only if the warehouse holds exactly its rows.

    The proof against the warehouse runs with no lock held (it takes round trips); then the batch is
    locked, read again and compared with what was proven, and deleted by primary key.
    """
    orders_x, express_x = by_table["ORDERS"], by_table["EXPRESS"]
    start, end = dt.datetime.combine(day, dt.time()), dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    deleted_orders = deleted_express = 0
    while True:
        with conn.cursor() as cur:
            cur.execute(f"{orders_x.select} ORDER BY id LIMIT %s", (start, end, BATCH_ORDERS))
            ids = [int(row[0]) for row in cur.fetchall()]
        if not ids:
            return deleted_orders, deleted_express
        orders, express = _read_batch(conn, orders_x, express_x, start, end, ids, lock=False)
        proven = (
            _prove(wconn, cfg_w, orders_x, day, "ID", ids, orders),
            _prove(wconn, cfg_w, express_x, day, "ORDER_ID", ids, express),
        )
        conn.begin()
        try:
            orders, express = _read_batch(conn, orders_x, express_x, start, end, ids, lock=True)
            if (_print(orders_x, orders, day), _print(express_x, express, day)) != proven:
                raise EcomError(
                    f"orders of {day} changed while they were being purged; none of that batch was deleted",
                    "run the purge again",
                )
            express_ids = [int(i) for i in express["ID"]]
            with conn.cursor() as cur:
                for table, keys in (
                    (f"`{cfg.express_database}`.express", express_ids),
                    (f"`{cfg.database}`.orders", ids),
                ):
                    if keys:
                        cur.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(keys))})", keys)
                        if cur.rowcount != len(keys):
                            raise EcomError(
                                f"deleting from {table} hit {cur.rowcount} of {len(keys)} rows", "run the purge again"
                            )
            deleted_orders += len(ids)
            deleted_express += len(express_ids)
            failpoints.hit("purge.between_batches")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def _read_batch(
    conn: Any, orders_x: Extract, express_x: Extract, start: dt.datetime, end: dt.datetime, ids: list[int], lock: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The batch's orders (those of the day among `ids`) and their expresses, locked FOR UPDATE if `lock`."""
    marks = ", ".join(["%s"] * len(ids))
    suffix = " FOR UPDATE" if lock else ""
    with conn.cursor() as cur:
        cur.execute(f"{orders_x.select} AND id IN ({marks}){suffix}", (start, end, *ids))
        orders = to_frame(orders_x, list(cur.fetchall()))
        cur.execute(f"{express_x.select} AND e.order_id IN ({marks}){suffix}", (start, end, *ids))
        express = to_frame(express_x, list(cur.fetchall()))
    return orders, express


def _print(extract: Extract, rows: pd.DataFrame, day: dt.date) -> fingerprint.Fingerprint:
    return extract.fingerprints(rows, pd.Series(day, index=rows.index)).get(day, fingerprint.Fingerprint())


def _prove(
    wconn: Any, cfg: WarehouseConfig, extract: Extract, day: dt.date, key: str, ids: list[int], rows: pd.DataFrame
) -> fingerprint.Fingerprint:
    """The warehouse must hold exactly these rows of the day (same keys, same values): their fingerprint."""
    marks = ", ".join(["%s"] * len(ids))
    sql = f"SELECT {extract.readback()} FROM {extract.table} WHERE ORDER_DATE = %s AND {key} IN ({marks})"
    held = fingerprint.Fingerprint()
    for frame in warehouse.frames(cfg, wconn.cursor(), sql, (day, *ids)):
        held += _print(extract, frame, day)
    have = _print(extract, rows, day)
    if held != have:
        raise EcomError(
            f"{extract.table} of {day}: TiDB holds rows the warehouse does not hold exactly ({have.rows} in TiDB, "
            f"{held.rows} in the warehouse; they changed after the day was proven); none of them was deleted",
            f"they stay in TiDB: see `ecom verify --from {day} --to {day}`",
        )
    return have
