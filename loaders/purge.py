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

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from loaders.archive import Extract, archive_lock, day_bounds, extracts, to_frame
from loaders.fingerprint import Fingerprint, row_hashes
from loaders.verify import Purge, purges, verify
from runner import failpoints, tidb, warehouse
from runner.config import Settings, TiDBConfig, WarehouseConfig
from runner.errors import EcomError
from runner.lease import Lease

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
            with archive_lock(settings, cfg_w) as held:
                started = purges(conn, cfg.database, dt.date.min, dt.date.max)  # unfinished ones resume, any age
                candidates = [day for day in _days_with_orders(conn, cfg.database, cutoff) if day not in started]
                proven: list[dt.date] = []
                for first, last in _windows(candidates):
                    check = verify(settings, first, last, daily_only=True)
                    prints = {(c.day, c.table): c.warehouse for c in check.checks}
                    for day in sorted(set(check.proven_days()) & set(candidates)):
                        held.ensure("recording a day to purge")
                        _record(conn, cfg.database, day, {t: prints[(day, t)] for t in ("ORDERS", "EXPRESS")})
                        proven.append(day)
                todo = sorted([day for day, p in started.items() if p.state == "purging"] + proven)
                wconn = warehouse.connect(cfg_w)
                try:
                    for done, day in enumerate(todo, start=1):
                        orders, express = _delete_day(conn, cfg, wconn, cfg_w, by_table, day, held)
                        deleted["ORDERS"] += orders
                        deleted["EXPRESS"] += express
                        _finish(conn, cfg.database, day)
                        report("purged days", done, len(todo))
                finally:
                    wconn.close()
        finally:
            conn.close()
    kept = sorted(set(candidates) - set(proven))
    return PurgeResult(cutoff, todo, deleted["ORDERS"], deleted["EXPRESS"], kept)


def _windows(days: list[dt.date], span: int = 366) -> list[tuple[dt.date, dt.date]]:
    """(first, last) ranges of at most `span` days covering the sorted `days` (verify takes bounded ranges)."""
    windows: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if windows and (day - windows[-1][0]).days < span:
            windows[-1] = (windows[-1][0], day)
        else:
            windows.append((day, day))
    return windows


def _days_with_orders(conn: Any, database: str, cutoff: dt.date) -> list[dt.date]:
    # patient: over years of orders the server answers only once it has grouped them all
    with tidb.patient(conn), conn.cursor() as cur:
        cur.execute(
            f"SELECT DISTINCT DATE(created_at) FROM `{database}`.orders WHERE created_at < %s ORDER BY 1",
            (dt.datetime.combine(cutoff, dt.time()),),
        )
        return [row[0] for row in cur.fetchall()]


def _record(conn: Any, database: str, day: dt.date, prints: dict[str, Fingerprint]) -> None:
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
    conn: Any,
    cfg: TiDBConfig,
    wconn: Any,
    cfg_w: WarehouseConfig,
    by_table: dict[str, Extract],
    day: dt.date,
    held: Lease,
) -> tuple[int, int]:
    """Delete one day in batches of orders, each order (with its express row) only if the warehouse holds
    exactly that row: per-row hashes compared. A row that changed after the day was proven stays in TiDB
    (verify then reports the day as `rows after purge`); the day is finished either way.

    The comparison with the warehouse runs with no lock held (it takes round trips); then the batch is
    locked, read again, compared with what was proven, and deleted by primary key.
    """
    orders_x, express_x = by_table["ORDERS"], by_table["EXPRESS"]
    start, end = day_bounds(day, day)
    deleted_orders = deleted_express = 0
    after_id = -(2**63)  # keyset pagination: rows kept back are not read again
    while True:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT id FROM `{cfg.database}`.orders WHERE created_at >= %s AND created_at < %s AND id > %s "
                "ORDER BY id LIMIT %s",
                (start, end, after_id, BATCH_ORDERS),
            )
            ids = [int(row[0]) for row in cur.fetchall()]
        if not ids:
            return deleted_orders, deleted_express
        after_id = ids[-1]
        proven = _held_exactly(
            wconn, cfg_w, orders_x, express_x, day, *_read_batch(conn, orders_x, express_x, start, end, ids)
        )
        if not proven:
            continue
        conn.begin()
        try:
            held.ensure("deleting purged rows", conn)  # in this transaction: the lease stays ours until it commits
            orders, express = _read_batch(conn, orders_x, express_x, start, end, sorted(proven), lock=True)
            still = _row_hashes(orders_x, express_x, orders, express)
            purgeable = sorted(i for i, hashes in still.items() if proven.get(i) == hashes)
            express_ids = [
                int(e) for e, o in zip(express["ID"], express["ORDER_ID"], strict=True) if int(o) in set(purgeable)
            ]
            with conn.cursor() as cur:
                for table, keys in (
                    (f"`{cfg.express_database}`.express", express_ids),
                    (f"`{cfg.database}`.orders", purgeable),
                ):
                    if keys:
                        cur.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(keys))})", keys)
                        if cur.rowcount != len(keys):
                            raise EcomError(
                                f"deleting from {table} hit {cur.rowcount} of {len(keys)} rows", "run the purge again"
                            )
            failpoints.hit("purge.before_batch_commit")
            conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # a failed rollback must not hide why we got here
                conn.rollback()
            raise
        deleted_orders += len(purgeable)
        deleted_express += len(express_ids)


def _read_batch(
    conn: Any,
    orders_x: Extract,
    express_x: Extract,
    start: dt.datetime,
    end: dt.datetime,
    ids: list[int],
    lock: bool = False,
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


Hashes = dict[int, tuple[int, int | None]]  # order id -> (hash of the order row, hash of its express row)


def _row_hashes(orders_x: Extract, express_x: Extract, orders: pd.DataFrame, express: pd.DataFrame) -> Hashes:
    express_hash = dict(
        zip((int(i) for i in express["ORDER_ID"]), map(int, row_hashes(express, express_x.checked_types)), strict=True)
    )
    return {
        int(i): (int(h), express_hash.get(int(i)))
        for i, h in zip(orders["ID"], row_hashes(orders, orders_x.checked_types), strict=True)
    }


def _held_exactly(
    wconn: Any,
    cfg: WarehouseConfig,
    orders_x: Extract,
    express_x: Extract,
    day: dt.date,
    orders: pd.DataFrame,
    express: pd.DataFrame,
) -> Hashes:
    """The batch's orders whose row and express row the warehouse holds exactly, with their hashes."""
    ids = [int(i) for i in orders["ID"]]
    if not ids:
        return {}
    marks = ", ".join(["%s"] * len(ids))
    held = []
    for extract, key in ((orders_x, "ID"), (express_x, "ORDER_ID")):
        sql = f"SELECT {extract.readback()} FROM {extract.table} WHERE ORDER_DATE = %s AND {key} IN ({marks})"
        frames = list(warehouse.frames(cfg, wconn.cursor(), sql, (day, *ids)))
        held.append(pd.concat(frames, ignore_index=True) if frames else orders.iloc[:0])
    in_warehouse = _row_hashes(orders_x, express_x, *held)
    return {
        i: hashes
        for i, hashes in _row_hashes(orders_x, express_x, orders, express).items()
        if in_warehouse.get(i) == hashes
    }
