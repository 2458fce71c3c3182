"""Reconciliation: TiDB and the warehouse compared per day and table (rows, amount, checksum of the rows).

A difference means the archive of that day is not what TiDB holds now: a late row, a shipment whose
status moved on, a day never archived or a warehouse edited by hand. Re-archiving the day mends it,
except for a purged day, whose rows TiDB no longer holds: there the warehouse must still equal what
was proven when the day was purged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from loaders import fingerprint
from loaders.archive import (
    DAILY_TABLES,
    SNAPSHOT_TABLES,
    Prints,
    check_range,
    day_bounds,
    day_of,
    days_in,
    extracts,
    read_back,
    read_frames,
    runs_of_days,
    snapshot_orders,
)
from runner import tidb, warehouse
from runner.config import Settings
from runner.errors import EcomError
from runner.serving import Table

Fingerprint = fingerprint.Fingerprint

OK, DIFFERS, PURGED, PURGING = "ok", "differs", "purged", "purge unfinished"
PURGED_COPY_CHANGED = "purged copy changed"  # the warehouse no longer holds what the purge proved
LATE_AFTER_PURGE = "rows after purge"  # rows arrived in TiDB for a day already purged: not in the warehouse
SNAPSHOT_CHANGED = "changed since archived"  # users/items moved on after their snapshot: expected, not a loss


@dataclass(frozen=True)
class Check:
    day: dt.date | None  # None: a dimension snapshot (the whole table)
    table: str
    tidb: Fingerprint
    warehouse: Fingerprint
    state: str

    @property
    def ok(self) -> bool:
        return self.state in (OK, PURGED, SNAPSHOT_CHANGED)


@dataclass(frozen=True)
class VerifyReport:
    first: dt.date
    last: dt.date
    checks: list[Check]
    purged: frozenset[dt.date] = frozenset()  # days the cold purge started or finished: never archived again

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def days(self, *states: str) -> list[dt.date]:
        """The days of whose daily tables one is in one of `states`."""
        return sorted({c.day for c in self.checks if c.day is not None and c.state in states})

    def advice(self) -> str:
        """What to do about the checks that are not ok."""
        differs, unfinished, late = self.days(DIFFERS), self.days(PURGING), self.days(LATE_AFTER_PURGE)
        changed = self.days(PURGED_COPY_CHANGED)
        if changed:
            return (
                f"the warehouse copy of purged days changed ({changed[0]}..{changed[-1]}) and TiDB no longer "
                "holds them: restore RAW from Snowflake Time Travel or a backup"
            )
        if differs:
            return f"archive those days again: `ecom archive --from {differs[0]} --to {differs[-1]}`"
        if unfinished:
            return "a purge was interrupted: run `ecom archive --purge-older-than N` again to finish it"
        if late:
            return (
                f"TiDB received rows for purged days ({late[0]}..{late[-1]}); they are kept in TiDB, and the "
                "archive cannot merge them into a purged day: copy them to the warehouse by hand"
            )
        return "nothing to do"

    def proven_days(self) -> list[dt.date]:
        """Days where TiDB and the warehouse hold exactly the same orders and expresses."""
        bad = set(self.days(DIFFERS, PURGED, PURGING, PURGED_COPY_CHANGED, LATE_AFTER_PURGE))
        return [day for day in self.days(OK) if day not in bad]


@dataclass(frozen=True)
class Purge:
    """A day the cold purge started or finished deleting from TiDB, and the fingerprints it proved."""

    day: dt.date
    state: str  # 'purging' or 'purged'
    prints: dict[str, Fingerprint]

    @staticmethod
    def encode(prints: dict[str, Fingerprint]) -> tuple[int, int, Decimal, str]:
        orders, express = prints["ORDERS"], prints["EXPRESS"]
        return orders.rows, express.rows, Decimal(orders.cents) / 100, f"{orders.hex}:{express.hex}"

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Purge:
        day, orders, express, amount, checksum, state = row
        order_hex, express_hex = str(checksum).split(":")
        cents = round(Decimal(amount) * 100)
        return cls(
            day,
            state,
            {
                "ORDERS": Fingerprint(int(orders), cents, int(order_hex, 16)),
                "EXPRESS": Fingerprint(int(express), 0, int(express_hex, 16)),
            },
        )


def purges(conn: Any, database: str, first: dt.date, last: dt.date) -> dict[dt.date, Purge]:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT day, orders, express, amount, checksum, state FROM `{database}`.archive_purges "
            "WHERE day BETWEEN %s AND %s",
            (first, last),
        )
        return {row[0]: Purge.decode(row) for row in cur.fetchall()}


def archived_range(settings: Settings) -> tuple[dt.date, dt.date] | None:
    """The first and last day the archive log knows of (None: nothing archived yet)."""
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            if not warehouse.table_exists(conn, cfg, cfg.raw_schema, "ARCHIVE_LOG"):
                return None
            cur = conn.cursor()
            cur.execute("SELECT MIN(ARCHIVE_DATE), MAX(ARCHIVE_DATE) FROM ARCHIVE_LOG WHERE TABLE_NAME = 'ORDERS'")
            first, last = cur.fetchone()
        finally:
            conn.close()
    return None if first is None else (first, last)


def _tidb_prints(
    settings: Settings, first: dt.date, last: dt.date, daily_only: bool, window_orders: int | None = None
) -> tuple[dict[str, Prints], dict[dt.date, Purge]]:
    """What TiDB holds, and which days it purged: the days in windows of whole days of at most `window_orders`
    orders (default: what one snapshot reads within ECOM_MAX_TRANSACTION_SECONDS), each window in one
    snapshot, then the dimensions in one of their own. Every figure is per day (or per dimension), so the
    windows give what one snapshot would (tests/test_archive_safety.py holds them to it)."""
    orders = window_orders or snapshot_orders(settings)
    prints: dict[str, Prints] = {table: {} for table in DAILY_TABLES}
    purged: dict[dt.date, Purge] = {}
    for days in runs_of_days(settings, first, last, orders):
        part, marks = _read_tidb(settings, days[0], days[-1], DAILY_TABLES, last)
        for table in DAILY_TABLES:
            prints[table].update(part[table])  # windows hold disjoint days
        purged.update(marks)
    if not daily_only:
        part, _ = _read_tidb(settings, first, last, SNAPSHOT_TABLES, last)
        prints.update(part)
    return prints, purged


def _read_tidb(
    settings: Settings, first: dt.date, last: dt.date, tables: tuple[str, ...], snapshot_day: dt.date
) -> tuple[dict[str, Prints], dict[dt.date, Purge]]:
    """The fingerprints of `tables` (daily ones for [first, last]; dimensions filed under `snapshot_day`) and
    the purge marks of [first, last], as of one moment."""
    cfg = settings.tidb
    start, end = day_bounds(first, last)
    prints: dict[str, Prints] = {}
    conn = tidb.connect(settings, cfg.database, streaming=True)
    try:
        tidb.require_schema(conn, cfg)
        with conn.cursor() as cur:
            tidb.start_snapshot(cur)
            clock = tidb.SnapshotClock(settings, f"verify of {first}..{last}")
            purged = purges(conn, cfg.database, first, last)
            for extract in extracts(cfg.database, cfg.express_database):
                if extract.table not in tables:
                    continue
                prints[extract.table] = {}
                for frame in read_frames(cur, extract, start, end):
                    day = day_of(extract, frame, snapshot_day)
                    fingerprint.merge(prints[extract.table], extract.fingerprints(frame, day))
                    clock.check()
            cur.execute("COMMIT")
    finally:
        conn.close()
    return prints, purged


def _warehouse_prints(settings: Settings, first: dt.date, last: dt.date, daily_only: bool) -> dict[str, Prints]:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            prints: dict[str, Prints] = {}
            for extract in extracts("_", "_"):
                if daily_only and extract.day_column is None:
                    continue
                exists = warehouse.table_exists(conn, cfg, cfg.raw_schema, extract.table)
                prints[extract.table] = read_back(conn, cfg, extract, first, last) if exists else {}
            return prints
        finally:
            conn.close()


def verify(
    settings: Settings, first: dt.date, last: dt.date, daily_only: bool = False, window_orders: int | None = None
) -> VerifyReport:
    """Compare [first, last] on both sides; the dimension snapshots too unless `daily_only`. TiDB is read in
    windows of days of at most `window_orders` orders, one snapshot each (see `_tidb_prints`)."""
    check_range(settings, first, last)
    on_tidb, purged = _tidb_prints(settings, first, last, daily_only, window_orders)
    in_warehouse = _warehouse_prints(settings, first, last, daily_only)
    empty = Fingerprint()
    checks: list[Check] = []
    for day in days_in(first, last):
        for table in DAILY_TABLES:
            have, held = on_tidb[table].get(day, empty), in_warehouse[table].get(day, empty)
            if day in purged:
                # TiDB no longer holds the day: the warehouse must still hold what the purge proved
                if held != purged[day].prints[table]:
                    state = PURGED_COPY_CHANGED
                elif purged[day].state != "purged":
                    state = PURGING
                else:
                    state = PURGED if have == empty else LATE_AFTER_PURGE
            else:
                state = OK if have == held else DIFFERS
            checks.append(Check(day, table, have, held, state))
    for table in sorted(set(on_tidb) - set(DAILY_TABLES)):
        have, held = on_tidb[table].get(last, empty), in_warehouse[table].get(last, empty)
        checks.append(Check(None, table, have, held, OK if have == held else SNAPSHOT_CHANGED))
    return VerifyReport(first, last, checks, frozenset(purged))


def default_range(settings: Settings) -> tuple[dt.date, dt.date]:
    """Everything archived so far."""
    found = archived_range(settings)
    if found is None:
        raise EcomError("the warehouse has no archived days to verify", "run `ecom archive` first")
    return found


def verify_tables(report: VerifyReport) -> list[Table]:
    """A summary per table, then every check that is not equal (all of them in JSON)."""
    summary = []
    for table in dict.fromkeys(c.table for c in report.checks):
        checks = [c for c in report.checks if c.table == table]
        summary.append(
            (
                table,
                len(checks),
                sum(c.state == OK for c in checks),
                sum(c.state == PURGED for c in checks),
                sum(not c.ok for c in checks),
                sum(c.tidb.rows for c in checks),
                sum(c.warehouse.rows for c in checks),
                _money(sum(c.tidb.cents for c in checks)) if table == "ORDERS" else None,
                _money(sum(c.warehouse.cents for c in checks)) if table == "ORDERS" else None,
            )
        )
    columns = ["table", "checks", "equal", "purged", "differ", "TiDB rows", "warehouse rows"]
    tables = [
        Table(
            f"Verify {report.first}..{report.last}: TiDB vs warehouse",
            [*columns, "TiDB amount", "warehouse amount"],
            summary,
            note=_note(report),
        )
    ]
    bad = [c for c in report.checks if c.state not in (OK, PURGED)]
    if bad:
        tables.append(
            Table(
                "Checks that are not equal",
                ["day", "table", "state", "TiDB rows", "warehouse rows", "TiDB checksum", "warehouse checksum"],
                [
                    (c.day or "snapshot", c.table, c.state, c.tidb.rows, c.warehouse.rows, c.tidb.hex, c.warehouse.hex)
                    for c in bad
                ],
            )
        )
    return tables


def _note(report: VerifyReport) -> str:
    if not report.ok:
        return "differences below"
    if any(c.state == SNAPSHOT_CHANGED for c in report.checks):
        return "every day equal; users/items changed since their snapshot (the next archive refreshes it)"
    return "all equal"


def _money(cents: int) -> Decimal:
    return Decimal(cents) / 100
