"""Reverse ETL: the marts go back to TiDB's serving tables, all of them swapped in at once.

Each table is rebuilt aside (`<table>__new`), then one RENAME TABLE statement swaps every table in,
so a reader sees the old set or the new set: never a mix, an empty table or stale rows. Leftovers of
an export killed half-way (`__new`, `__old`) are swept by the next one; exports into one database take
turns (a named lock, released by the server when the session ends, even by a kill), so one export's sweep
never drops another's half-built tables. Marts of different as-of dates (a transform killed between
models) are refused rather than served side by side.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from loaders.bulk import load_frame
from runner import failpoints, tidb, warehouse
from runner.config import Settings
from runner.errors import EcomError

FETCH_ROWS = 50_000
LOCK_WAIT_SECONDS = 600  # how long an export waits for another one into the same database
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ServingTable:
    table: str  # in TiDB
    mart: str  # in the warehouse
    columns: dict[str, str]  # TiDB column -> mart expression


SERVING_TABLES = [
    ServingTable(
        "user_labels",
        "dim_user_labels",
        {
            c: c
            for c in (
                "user_id",
                "user_label",
                "avg_amount",
                "order_count",
                "total_amount",
                "overall_avg_amount",
                "as_of_date",
            )
        },
    ),
    ServingTable(
        "hot_items",
        "fct_weekly_hot_items",
        {"item_label": "item_label", "rank": "item_rank"}
        | {
            c: c
            for c in (
                "item_id",
                "units_sold",
                "item_name",
                "item_price",
                "item_type",
                "price_threshold",
                "window_start",
                "window_end",
                "as_of_date",
            )
        },
    ),
    ServingTable(
        "monthly_bills",
        "fct_monthly_bills",
        {c: c for c in ("user_id", "month", "order_count", "units", "total_amount", "as_of_date")},
    ),
    ServingTable(
        "monthly_spending",
        "fct_monthly_spending",
        {c: c for c in ("month", "total_amount", "order_count", "buyer_count", "avg_bill_per_buyer", "as_of_date")},
    ),
]


@dataclass(frozen=True)
class ExportResult:
    rows: dict[str, int]
    as_of_date: dt.date | None


def _read_mart(wconn: Any, schema: str, spec: ServingTable) -> list[pd.DataFrame]:
    cur = wconn.cursor()
    select = ", ".join(f"{expr} AS {col.upper()}" if col == "rank" else expr for col, expr in spec.columns.items())
    try:
        cur.execute(f"SELECT {select} FROM {schema}.{spec.mart}")
    except Exception as exc:
        if "does not exist" in str(exc).lower() or "not found" in str(exc).lower():
            raise EcomError(f"the warehouse has no {schema}.{spec.mart} yet", "run `ecom transform` first") from None
        raise
    frames = []
    while rows := cur.fetchmany(FETCH_ROWS):
        frames.append(pd.DataFrame.from_records(rows, columns=list(spec.columns)))
    return frames


def _one_as_of_date(marts: dict[str, list[pd.DataFrame]]) -> dt.date | None:
    """The as-of date all marts share; an interrupted transform leaves some marts on another date."""
    dates: dict[str, set[dt.date]] = {
        table: {day for frame in frames for day in frame["as_of_date"].unique()} for table, frames in marts.items()
    }
    found = set().union(*dates.values())
    if len(found) > 1:
        detail = ", ".join(f"{table} {'/'.join(sorted(map(str, days)))}" for table, days in dates.items() if days)
        raise EcomError(
            f"the marts are not from one transform (as of: {detail})",
            "rerun `ecom transform` (an earlier one did not finish), then `ecom export`",
        )
    return next(iter(found), None)


def lock_name(database: str) -> str:
    """The named lock (`tidb.exclusive`) that exports into `database` take turns on."""
    return f"export:{database}"


def _read_marts(settings: Settings) -> dict[str, list[pd.DataFrame]]:
    with warehouse.session(settings) as wcfg:
        wconn = warehouse.connect(wcfg)
        try:
            return {spec.table: _read_mart(wconn, f"{wcfg.database}.{wcfg.schema}", spec) for spec in SERVING_TABLES}
        finally:
            wconn.close()


def export(settings: Settings, progress: Progress | None = None) -> ExportResult:
    report = progress or (lambda _table, _done, _total: None)
    cfg = settings.tidb
    db = f"`{cfg.database}`"
    exported_at = settings.now()
    rows: dict[str, int] = {}
    with tidb.connection(settings, cfg.database) as conn:
        tidb.require_schema(conn, cfg)
        # One at a time: else another export's sweep could drop our `__new` tables, and our RENAME swap in
        # its half-built ones. A second export waits for the first (exports take seconds). The marts are
        # read under the lock too, so a slower export never swaps older marts in over a newer one.
        with (
            tidb.exclusive(conn, lock_name(cfg.database), "export into this database", LOCK_WAIT_SECONDS),
            conn.cursor() as cur,
        ):
            marts = _read_marts(settings)
            as_of = _one_as_of_date(marts)
            for spec in SERVING_TABLES:
                cur.execute(f"DROP TABLE IF EXISTS {db}.{spec.table}__new, {db}.{spec.table}__old")
                cur.execute(f"CREATE TABLE {db}.{spec.table}__new LIKE {db}.{spec.table}")
                rows[spec.table] = 0
                for frame in marts[spec.table]:
                    rows[spec.table] += load_frame(
                        conn, f"{db}.{spec.table}__new", frame.assign(exported_at=exported_at)
                    )
                report(spec.table, rows[spec.table], rows[spec.table])
                failpoints.hit("export.between_tables")  # crash tests: some `__new` tables built, the rest not
            failpoints.hit("export.before_swap")  # every `__new` table built, readers still on the old set
            swaps = ", ".join(
                f"{db}.{s.table} TO {db}.{s.table}__old, {db}.{s.table}__new TO {db}.{s.table}" for s in SERVING_TABLES
            )
            cur.execute(f"RENAME TABLE {swaps}")
            failpoints.hit("export.after_swap")  # readers on the new set, the `__old` tables not dropped yet
            cur.execute(f"DROP TABLE {', '.join(f'{db}.{s.table}__old' for s in SERVING_TABLES)}")
    failpoints.hit("export.before_run_log")  # the export is done; the pipeline has not logged the run yet
    return ExportResult(rows=rows, as_of_date=as_of)
