"""The monthly rollup is built incrementally, and an incremental build equals a full rebuild, row for row.

Real engines: a MariaDB database standing in for TiDB, the fakesnow warehouse, dbt in-process, through
the pipeline's own steps. A sequence of transforms over one warehouse: a first (full) build; then days
archived for the first time, an older day whose orders changed in TiDB archived again, a day that lost
all its orders archived again, and the as-of date moved forward; the same as-of again (nothing to do);
the as-of date moved backward past the first day of a month (the month goes); and a regenerate, which
drops RAW while the marts schema stays. After each, every mart and the rollup equal a `--full-refresh`
build of a copy of the same warehouse, and the rollup's month stamps show that exactly the affected
months were rebuilt: a silent full rebuild, or a missed month, fails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from dbt.cli.main import dbtRunner

from loaders import export as export_mod
from loaders.generate import GenerateSpec
from runner import dbt, pipeline, tidb, warehouse
from runner.config import Settings, TiDBConfig
from tests.conftest import drop_databases, make_settings

pytestmark = pytest.mark.e2e
DAYS = 120
SPEC = GenerateSpec(users=1_500, items=150, orders=18_000, days=DAYS, seed=23)
ROLLUP = "int_orders__monthly_rollup"
ROLLUP_COLUMNS = ("bill_month", "user_id", "order_count", "units", "amount_cents", "buyer_count", "month_signature")
Rows = dict[str, list[tuple[object, ...]]]


@dataclass
class History:
    settings: Settings
    today: dt.date
    first_day: dt.date


def _normal(value: object) -> object:
    """One representation per value, whichever type the driver returned."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value)).normalize()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _query(settings: Settings, sql: str) -> list[tuple[object, ...]]:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            cur = conn.cursor()
            cur.execute(sql.format(schema=f"{cfg.database}.{cfg.schema}", raw=f"{cfg.database}.{cfg.raw_schema}"))
            return [tuple(_normal(v) for v in row) for row in cur.fetchall()]
        finally:
            conn.close()


def built_rows(settings: Settings) -> Rows:
    """Every mart (the columns the export serves) and the rollup (all but its stamps), sorted."""
    found = {
        spec.mart: _query(settings, f"SELECT {', '.join(spec.columns.values())} FROM {{schema}}.{spec.mart}")
        for spec in export_mod.SERVING_TABLES
    }
    found[ROLLUP] = _query(settings, f"SELECT {', '.join(ROLLUP_COLUMNS)} FROM {{schema}}.{ROLLUP}")
    return {name: sorted(rows, key=repr) for name, rows in found.items()}


def month_stamps(settings: Settings) -> dict[str, str]:
    """bill_month -> the dbt invocation that last built the month (from its month row)."""
    rows = _query(settings, f"SELECT bill_month, dbt_invocation_id FROM {{schema}}.{ROLLUP} WHERE user_id IS NULL")
    return {str(month): str(stamp) for month, stamp in rows}


def stamp_counts(settings: Settings) -> dict[str, int]:
    """dbt invocation -> rows of the rollup it wrote."""
    rows = _query(settings, f"SELECT dbt_invocation_id, COUNT(*) FROM {{schema}}.{ROLLUP} GROUP BY 1")
    return {str(stamp): int(str(count)) for stamp, count in rows}


def day_log(settings: Settings, day: dt.date) -> tuple[object, ...]:
    """(rows, amount, archived at) the archive log holds for a day's orders."""
    where = f"TABLE_NAME = 'ORDERS' AND ARCHIVE_DATE = '{day.isoformat()}'"
    (row,) = _query(settings, f"SELECT ROW_COUNT, AMOUNT_SUM, ARCHIVED_AT FROM {{raw}}.ARCHIVE_LOG WHERE {where}")
    return row


def month_of(day: dt.date) -> str:
    return day.replace(day=1).isoformat()


def rebuilt_months(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Months built by the last run: new, or with another stamp than before."""
    return {month for month, stamp in after.items() if before.get(month) != stamp}


def full_rebuild(settings: Settings, as_of: dt.date, home: Path) -> Rows:
    """The marts and rollup a `--full-refresh` build makes of a copy of this warehouse (same RAW, same as-of)."""
    copy = dataclasses.replace(settings, home=home)
    shutil.copytree(settings.warehouse_dir, copy.warehouse_dir)
    outcome = dbt.run(copy, ["run", "--full-refresh"], as_of, quiet=True)
    assert outcome.success, outcome.failures
    return built_rows(copy)


def assert_equal_rows(incremental: Rows, full: Rows) -> None:
    assert set(incremental) == set(full)
    for name in full:
        assert full[name], f"{name} is empty: the comparison would prove nothing"
        assert incremental[name] == full[name], f"{name}: the incremental build differs from a full rebuild"


def _shop(settings: Settings, *statements: tuple[str, tuple[object, ...]]) -> None:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        for sql, params in statements:
            cur.execute(sql, params)


@pytest.fixture(scope="module")
def history(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Generated history; every day archived but the last five; no transform yet."""
    settings = make_settings(server, Path(tmp_path_factory.mktemp("incr")), "incr")
    today = settings.today()
    first_day = today - dt.timedelta(days=DAYS)
    tidb.init_schema(settings)
    pipeline.run_generate(settings, SPEC)
    pipeline.run_archive(settings, first_day, today - dt.timedelta(days=6))
    yield History(settings, today, first_day)
    drop_databases(settings)


def test_incremental_builds_equal_full_rebuilds(history: History, tmp_path: Path) -> None:
    settings, today = history.settings, history.today
    express = settings.tidb.express_database

    # 1. the first build, as of D1: every month is built
    d1 = today - dt.timedelta(days=5)
    pipeline.run_transform(settings, d1, quiet=True)
    first = month_stamps(settings)
    assert len(first) >= 3 and len(set(first.values())) == 1
    assert_equal_rows(built_rows(settings), full_rebuild(settings, d1, tmp_path / "full1"))

    # 2. days archived for the first time; an older day whose orders changed in TiDB archived again
    #    (a third of them moved to other users: the day's row count and amount stay the same, only
    #    its ARCHIVED_AT tells); a day that lost all its orders archived again; the as-of date moves
    #    forward to D2
    # both in one month well inside the history, so the months before and after it are not affected
    changed_month = (today - dt.timedelta(days=85)).replace(day=1)
    changed_day, emptied_day = changed_month + dt.timedelta(days=3), changed_month + dt.timedelta(days=10)
    day = "created_at >= %s AND created_at < %s"
    changed = (changed_day, changed_day + dt.timedelta(days=1))
    emptied = (emptied_day, emptied_day + dt.timedelta(days=1))
    shipments = f"DELETE e FROM `{express}`.express e JOIN orders o ON o.id = e.order_id WHERE o.{day}"
    _shop(
        settings,
        (f"UPDATE orders SET user_id = 1 + MOD(user_id + 7, 50) WHERE {day} AND MOD(id, 3) = 0", changed),
        (shipments, emptied),
        (f"DELETE FROM orders WHERE {day}", emptied),
    )
    before = {d: day_log(settings, d) for d in (changed_day, emptied_day)}
    pipeline.run_archive(settings, changed_day, changed_day)
    # the emptied day is replaced on purpose: the warehouse refuses to lose archived rows unless asked
    assert pipeline.run_archive(settings, emptied_day, emptied_day, allow_removal=True).orders == 0
    rows, amount, archived_at = day_log(settings, changed_day)
    assert (rows, amount) == before[changed_day][:2] and archived_at != before[changed_day][2]
    assert day_log(settings, emptied_day)[0] == 0 != before[emptied_day][0]
    new_days = [today - dt.timedelta(days=n) for n in (5, 4, 3)]
    pipeline.run_archive(settings, new_days[0], new_days[-1])
    d2 = today - dt.timedelta(days=2)
    pipeline.run_transform(settings, d2, quiet=True)
    second = month_stamps(settings)
    expected = {month_of(changed_month)} | {month_of(d) for d in new_days}
    assert len(set(first) - expected) >= 2
    assert rebuilt_months(first, second) == expected, "not exactly the affected months were rebuilt"
    assert set(second) == set(first) | expected
    (new_stamp,) = set(second.values()) - set(first.values())
    counts = stamp_counts(settings)
    months = ", ".join(f"'{month}'" for month in sorted(expected))
    rebuilt_rows = _query(settings, f"SELECT COUNT(*) FROM {{schema}}.{ROLLUP} WHERE bill_month IN ({months})")[0][0]
    assert counts[new_stamp] == int(str(rebuilt_rows)) < sum(counts.values()), "rows outside the affected months"
    incremental = built_rows(settings)
    assert_equal_rows(incremental, full_rebuild(settings, d2, tmp_path / "full2"))

    # 3. the same as-of again, nothing archived: nothing is rebuilt, nothing changes
    pipeline.run_transform(settings, d2, quiet=True)
    assert month_stamps(settings) == second
    assert built_rows(settings) == incremental

    # the marts export (one as-of date on every row) and serve the bills they hold
    exported = pipeline.run_export(settings)
    assert exported.as_of_date == d2
    assert exported.rows["monthly_bills"] == len(incremental["fct_monthly_bills"])

    # 4. the as-of date moves backward to the first day of D2's month: that month has no orders
    #    before it any more and goes; the months before it are untouched
    d3 = (d2 - dt.timedelta(days=1)).replace(day=1)
    pipeline.run_transform(settings, d3, quiet=True)
    third = month_stamps(settings)
    assert month_of(d3) not in third and month_of(d3) in second
    assert {m: s for m, s in second.items() if m != month_of(d3)} == third, "months before D3 were rebuilt"
    assert_equal_rows(built_rows(settings), full_rebuild(settings, d3, tmp_path / "full3"))
    assert {str(row[-1]) for row in built_rows(settings)["fct_monthly_bills"]} == {d3.isoformat()}


def test_regenerate_drops_raw_and_the_next_transform_rebuilds_everything(history: History, tmp_path: Path) -> None:
    """`generate` drops RAW (the marts schema stays): the rollup holds months of orders that no longer exist."""
    settings, today = history.settings, history.today
    as_of = today - dt.timedelta(days=5)
    pipeline.run_transform(settings, as_of, quiet=True)
    before = month_stamps(settings)
    old = built_rows(settings)

    pipeline.run_generate(settings, dataclasses.replace(SPEC, seed=SPEC.seed + 1, orders=12_000, days=50))
    pipeline.run_archive(settings, today - dt.timedelta(days=50), today - dt.timedelta(days=1))
    pipeline.run_transform(settings, today, quiet=True)
    after = month_stamps(settings)
    assert not set(after.values()) & set(before.values()), "a month of the dropped history survived"
    assert min(after) == month_of(today - dt.timedelta(days=50)) and min(before) < min(after)
    rows = built_rows(settings)
    assert rows != old
    assert_equal_rows(rows, full_rebuild(settings, today, tmp_path / "full"))


INLINE = "{{ create_table_as(true, api.Relation.create('ECOMMERCE', 'ANALYTICS', 'SCRATCH'), 'select 1') }}"


@pytest.mark.parametrize(("account", "temporary"), [("fakesnow", False), ("xy12345.eu-central-1", True)])
def test_incremental_scratch_tables_only_change_on_the_standin(
    settings: Settings, tmp_path: Path, account: str, temporary: bool
) -> None:
    """The delete+insert of an incremental model fills a temporary scratch table (create_table_as): only
    on the stand-in, which cannot create a qualified temporary table, is it a plain table."""
    profiles = tmp_path / "other_profiles"
    profiles.mkdir()
    profile = (settings.profiles_dir / "profiles.yml").read_text()
    (profiles / "profiles.yml").write_text(profile.replace("account: fakesnow", f"account: {account}"))
    other = dataclasses.replace(settings, profiles_dir=profiles)
    with warehouse.session(settings):  # the stand-in stays patched in: no traffic leaves the machine
        result = dbtRunner().invoke(dbt.dbt_args(other, ["compile", "--inline", INLINE]))
    assert result.success, result.exception
    sql = " ".join(str(result.result.results[0].node.compiled_code).lower().split())
    assert "create or replace" in sql and "scratch" in sql
    assert ("temporary table" in sql) is temporary
