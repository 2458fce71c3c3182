"""The export streams the marts: batches of at most EXPORT_ROWS rows, each loaded into its `__new` table at once.

Made small here, so that every big mart spans many batches (and, on the stand-in, many slices of its key):
the serving tables must still equal the marts row for row, and marts of two as-of dates must still be refused
with nothing swapped and no `__new` table left, whether the mix is seen before building or only while loading.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from loaders import export as export_mod
from loaders.generate import GenerateSpec
from runner import dbt, pipeline, tidb, warehouse
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError
from tests.conftest import drop_databases, make_settings
from tests.test_crash_transform_export import leftovers, mart_rows, observe, serving_rows

pytestmark = pytest.mark.e2e
SPEC = GenerateSpec(users=1_500, items=200, orders=12_000, days=30, seed=7)
SMALL_BATCHES = 150


@pytest.fixture(scope="module")
def built(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Generated history, archived, transformed (marts built, tested, released) as of today; nothing exported yet."""
    settings = make_settings(server, Path(tmp_path_factory.mktemp("exportstream")), "exstream")
    today = settings.today()
    tidb.init_schema(settings)
    pipeline.run_generate(settings, SPEC)
    pipeline.run_archive(settings, today - dt.timedelta(days=SPEC.days), today - dt.timedelta(days=1))
    dbt.transform(settings, today, quiet=True)
    yield settings
    drop_databases(settings)


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """EXPORT_ROWS made small; the sizes of the batches loaded, per serving table."""
    monkeypatch.setattr(export_mod, "EXPORT_ROWS", SMALL_BATCHES)
    loaded: dict[str, list[int]] = defaultdict(list)
    real = export_mod.load_batches

    def counting(conn: Any, items: Iterator[tuple[str, pd.DataFrame]]) -> Iterator[tuple[str, pd.DataFrame]]:
        for table, frame in real(conn, items):
            loaded[table.split(".")[-1].strip("`").removesuffix("__new")].append(len(frame))
            yield table, frame

    monkeypatch.setattr(export_mod, "load_batches", counting)
    return loaded


def copy_of(settings: Settings, home: Path) -> Settings:
    """Another warehouse (a copy of this one's files) over the same TiDB databases."""
    other = dataclasses.replace(settings, home=home)
    shutil.copytree(settings.warehouse_dir, other.warehouse_dir)
    return other


def run_sql(settings: Settings, sql: str) -> None:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            conn.cursor().execute(sql.format(schema=f"{cfg.database}.{cfg.schema}"))
        finally:
            conn.close()


def test_streamed_export_loads_exactly_the_marts(built: Settings, batches: dict[str, list[int]]) -> None:
    marts = mart_rows(built)
    result = export_mod.export(built)

    assert serving_rows(built) == marts  # row for row, every table
    assert result.rows == {table: len(rows) for table, rows in marts.items()}
    assert result.as_of_date == built.today()
    for table in ("user_labels", "monthly_bills"):
        assert len(marts[table]) > 5 * SMALL_BATCHES, f"{table} is too small to span several batches"
        assert len(batches[table]) >= len(marts[table]) // SMALL_BATCHES, (table, batches[table])
    assert all(size <= SMALL_BATCHES for sizes in batches.values() for size in sizes), dict(batches)
    assert sum(batches["monthly_bills"]) == len(marts["monthly_bills"])
    assert leftovers(built) == set()


def test_export_converts_no_value(built: Settings, batches: dict[str, list[int]], tmp_path: Path) -> None:
    """Numbers and dates read in their cheap forms (BIGINT, decimal text) load as the very values of the marts:
    checked on values the generated data does not reach (18-digit numbers, negative and tiny amounts), which
    also skew the keys the stand-in slices the mart by."""
    edge = copy_of(built, tmp_path / "edge")
    run_sql(
        edge,
        "INSERT INTO {schema}.fct_monthly_bills (user_id, bill_month, month, order_count, units, total_amount, "
        "as_of_date) SELECT 999999999999999999, DATE '2000-01-01', '2000-01', 999999999, 0, -9999999999999999.99, "
        "MAX(as_of_date) FROM {schema}.fct_monthly_bills "
        "UNION ALL SELECT 999999999999999998, DATE '2000-01-01', '2000-01', 0, 1, 0.01, MAX(as_of_date) "
        "FROM {schema}.fct_monthly_bills",
    )
    export_mod.export(edge)
    assert serving_rows(edge) == mart_rows(edge)


@pytest.mark.parametrize("seen", ["before building", "while loading"])
def test_mixed_as_of_dates_are_refused_with_nothing_swapped(
    built: Settings, batches: dict[str, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: str
) -> None:
    export_mod.export(built)
    serving = observe(built)
    batches.clear()
    mixed = copy_of(built, tmp_path / "mixed")
    # some bills as of the day before: what a transform killed half-way through a model would leave
    run_sql(
        mixed,
        "UPDATE {schema}.fct_monthly_bills SET as_of_date = DATEADD(day, -1, as_of_date) "
        "WHERE user_id IN (SELECT MAX(user_id) FROM {schema}.fct_monthly_bills)",
    )
    if seen == "while loading":  # the marts changed after the export looked at them: only the rows tell
        looked = export_mod.plan_read
        monkeypatch.setattr(
            export_mod,
            "plan_read",
            lambda *args: dataclasses.replace(looked(*args), as_of_dates=frozenset({built.today()})),
        )

    with pytest.raises(EcomError, match="not from one transform") as refused:
        export_mod.export(mixed)

    assert "monthly_bills" in str(refused.value)
    assert observe(built) == serving, "a refused export must leave the serving tables as they were"
    assert leftovers(built) == set(), "a refused export must drop the `__new` tables it built"
    if seen == "before building":
        assert not batches, "the mix was visible up front: nothing should have been loaded"
    else:
        assert sum(batches["monthly_bills"]) > SMALL_BATCHES, "the refusal should come after loading"


def test_no_marts_yet(built: Settings, tmp_path: Path) -> None:
    empty = dataclasses.replace(built, home=tmp_path / "empty")
    with pytest.raises(EcomError, match=r"the warehouse has no .* yet") as missing:
        export_mod.export(empty)
    assert "ecom transform" in missing.value.fix
    assert leftovers(built) == set()


def test_key_slices_cover_every_row_once(built: Settings, tmp_path: Path) -> None:
    """Slices of the stand-in: every row in exactly one, none much over the size asked for, unless one key
    alone has more rows (skewed keys: a dense run, a far outlier, a key of many rows, NULLs)."""
    other = copy_of(built, tmp_path / "slices")
    keys = [*range(1, 2_001), *[5_000] * 400, 10**15, None, None]
    with warehouse.session(other) as cfg:
        conn = warehouse.connect(cfg)
        try:
            cur = conn.cursor()
            table = f"{cfg.database}.{cfg.raw_schema}.SLICED"
            cur.execute(f"CREATE TABLE {table} (K NUMBER(19,0), V NUMBER(19,0))")
            values = ", ".join(f"({'NULL' if k is None else k}, {i})" for i, k in enumerate(keys))
            cur.execute(f"INSERT INTO {table} VALUES {values}")
            slices = warehouse.key_slices(cfg, conn, table, "K", len(keys), 100)
            seen: list[int] = []
            for where in slices:
                cur.execute(f"SELECT V, K FROM {table} WHERE {where}")
                rows = cur.fetchall()
                assert len(rows) <= 100 or len({k for _, k in rows}) == 1, (where, len(rows))
                seen += [int(v) for v, _ in rows]
        finally:
            conn.close()
    assert sorted(seen) == list(range(len(keys))), "a row missing from the slices, or in two of them"
    assert len(keys) // 100 - 1 <= len(slices) <= len(keys) // 50, "slices far smaller than asked for"


def test_whole_numbers_with_nulls_stay_exact() -> None:
    read = export_mod.MartRead(export_mod.SERVING_TABLES[2], "M", "", ("user_id",), (), 0, frozenset())
    columns = list(read.spec.columns)
    frame = pd.DataFrame([[float(2**53), "2026-01", 1, 1, "1.00", None], [None, "2026-01", 1, 1, "1.00", None]])
    typed = export_mod._typed(frame.set_axis(columns, axis=1), read)
    assert typed["user_id"].tolist()[0] == 2**53 and pd.isna(typed["user_id"].tolist()[1])
    frame.iloc[0, 0] = float(2**53 + 2)
    with pytest.raises(EcomError, match="too large to read exactly"):
        export_mod._typed(frame.set_axis(columns, axis=1), read)


def test_labels_of_users_gone_from_tidb_are_not_served(built: Settings) -> None:
    """A user deleted in TiDB after their orders were archived keeps a label in the marts; the serving tables,
    which answer only for the users TiDB has, leave it out (as `ecom recommend` says the user does not exist)."""
    labelled = {int(row[0]) for row in mart_rows(built)["user_labels"]}
    with tidb.connection(built, built.tidb.database) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM users WHERE id = %s", (min(labelled),))
        gone = cur.fetchone()
        assert gone is not None
        cur.execute("DELETE FROM users WHERE id = %s", (gone[0],))
    try:
        result = export_mod.export(built)
        served = {int(row[0]) for row in serving_rows(built)["user_labels"]}
        assert result.unknown_users == 1 and gone[0] not in served
        assert served == labelled - {gone[0]}
        assert result.rows["user_labels"] == len(served)
    finally:
        with tidb.connection(built, built.tidb.database) as conn, conn.cursor() as cur:
            cur.execute(f"INSERT INTO users VALUES ({', '.join(['%s'] * len(gone))})", gone)
