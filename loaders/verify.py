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
from loaders.dataset import require_whole_dataset
from runner import tidb, warehouse
from runner.config import Settings
from runner.errors import EcomError
from runner.serving import Table

Fingerprint = fingerprint.Fingerprint

OK, DIFFERS, PURGED, PURGING = "ok", "differs", "purged", "purge unfinished"
NOT_ARCHIVED = "not archived"  # the archive log has no such day: nothing to be equal to
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
        differs, unfinished, late = self.days(DIFFERS, NOT_ARCHIVED), self.days(PURGING), self.days(LATE_AFTER_PURGE)
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
        bad = set(self.days(DIFFERS, NOT_ARCHIVED, PURGED, PURGING, PURGED_COPY_CHANGED, LATE_AFTER_PURGE))
        return [day for day in self.days(OK) if day not in bad]

    def stale_days(self) -> list[dt.date]:
        """Days an archive would mend: they differ, or TiDB holds orders of a day never archived."""
        missing = {c.day for c in self.checks if c.state == NOT_ARCHIVED and c.tidb.rows}
        return sorted(set(self.days(DIFFERS)) | {day for day in missing if day is not None})


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


def archived_days(settings: Settings) -> list[dt.date]:
    """The days the archive log holds orders of, in order (empty: nothing archived yet)."""
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            return sorted(_logged_days(conn, cfg, None))
        finally:
            conn.close()


def _logged_days(conn: Any, cfg: Any, between: tuple[dt.date, dt.date] | None) -> set[dt.date]:
    if not warehouse.table_exists(conn, cfg, cfg.raw_schema, "ARCHIVE_LOG"):
        return set()
    cur = conn.cursor()
    where, params = ("AND ARCHIVE_DATE BETWEEN %s AND %s", between) if between else ("", ())
    cur.execute(f"SELECT DISTINCT ARCHIVE_DATE FROM ARCHIVE_LOG WHERE TABLE_NAME = 'ORDERS' {where}", params)
    return {row[0] for row in cur.fetchall()}


def runs_of(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Sorted days as (first, last) ranges of consecutive days."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if ranges and day == ranges[-1][1] + dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _tidb_prints(
    settings: Settings,
    ranges: list[tuple[dt.date, dt.date]],
    daily_only: bool,
    window_orders: int | None = None,
) -> tuple[dict[str, Prints], dict[dt.date, Purge]]:
    """What TiDB holds, and which days it purged: the days of each range in windows of whole days of at most
    `window_orders` orders (default: what one snapshot reads within ECOM_MAX_TRANSACTION_SECONDS), each window
    in one snapshot, then the dimensions in one of their own. Every figure is per day (or per dimension), so
    the windows give what one snapshot would (tests/test_archive_safety.py holds them to it)."""
    orders = window_orders or snapshot_orders(settings)
    prints: dict[str, Prints] = {table: {} for table in DAILY_TABLES}
    purged: dict[dt.date, Purge] = {}
    first, last = ranges[0][0], ranges[-1][1]
    for low, high in ranges:
        for days in runs_of_days(settings, low, high, orders):
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
        require_whole_dataset(conn, cfg)
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


def _warehouse_prints(
    settings: Settings, ranges: list[tuple[dt.date, dt.date]], daily_only: bool
) -> tuple[dict[str, Prints], set[dt.date]]:
    """What RAW holds of the ranges' days (and the snapshots, filed under the last day), and which of the days
    the archive log knows."""
    last = ranges[-1][1]
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            prints: dict[str, Prints] = {}
            for extract in extracts("_", "_"):
                if daily_only and extract.day_column is None:
                    continue
                prints[extract.table] = {}
                if not warehouse.table_exists(conn, cfg, cfg.raw_schema, extract.table):
                    continue
                for low, high in ranges if extract.day_column else [(last, last)]:
                    prints[extract.table].update(read_back(conn, cfg, extract, low, high))
            logged: set[dt.date] = set()
            for low, high in ranges:
                logged |= _logged_days(conn, cfg, (low, high))
            return prints, logged
        finally:
            conn.close()


def verify(
    settings: Settings,
    first: dt.date,
    last: dt.date,
    daily_only: bool = False,
    window_orders: int | None = None,
    *,
    only: list[dt.date] | None = None,
) -> VerifyReport:
    """Compare [first, last] on both sides (`only`: just those days of it, e.g. the days archived); the
    dimension snapshots too unless `daily_only`. TiDB is read in windows of days of at most `window_orders`
    orders, one snapshot each (see `_tidb_prints`). A day the archive log does not hold is NOT_ARCHIVED."""
    check_range(settings, first, last, limit_span=only is None)
    days = days_in(first, last) if only is None else sorted(d for d in set(only) if first <= d <= last)
    if not days:
        raise EcomError(f"no archived day in {first}..{last} to verify", "run `ecom archive` first")
    ranges = runs_of(days)
    on_tidb, purged = _tidb_prints(settings, ranges, daily_only, window_orders)
    in_warehouse, logged = _warehouse_prints(settings, ranges, daily_only)
    empty = Fingerprint()
    checks: list[Check] = []
    for day in days:
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
            elif day not in logged:
                state = NOT_ARCHIVED
            else:
                state = OK if have == held else DIFFERS
            checks.append(Check(day, table, have, held, state))
    for table in sorted(set(on_tidb) - set(DAILY_TABLES)):
        have, held = on_tidb[table].get(last, empty), in_warehouse[table].get(last, empty)
        checks.append(Check(None, table, have, held, OK if have == held else SNAPSHOT_CHANGED))
    return VerifyReport(first, last, checks, frozenset(purged))


def verify_archived(settings: Settings) -> VerifyReport:
    """Every day archived so far (the days the archive log holds, however far apart), and the snapshots."""
    days = archived_days(settings)
    if not days:
        raise EcomError("the warehouse has no archived days to verify", "run `ecom archive` first")
    return verify(settings, days[0], days[-1], only=days)


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
                sum(c.state == NOT_ARCHIVED for c in checks),
                sum(not c.ok and c.state != NOT_ARCHIVED for c in checks),
                sum(c.tidb.rows for c in checks),
                sum(c.warehouse.rows for c in checks),
                _money(sum(c.tidb.cents for c in checks)) if table == "ORDERS" else None,
                _money(sum(c.warehouse.cents for c in checks)) if table == "ORDERS" else None,
            )
        )
    columns = ["table", "checks", "equal", "purged", "not archived", "differ", "TiDB rows", "warehouse rows"]
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
