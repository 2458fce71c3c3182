"""`ecom transform` and `ecom export` killed (SIGKILL, through the failpoints) at several points, then rerun.

The serving tables must always hold one whole export: a reader polling them while exports are killed and
rerun sees the old set or the new set, never a mix, an empty table or stale rows; after the reruns they
equal the marts row for row. A transform killed between models leaves marts of two as-of dates: export
refuses them (nor did that transform release them: tests/test_export_gate.py), and the rerun builds the same
marts as a clean build and releases them even when killed before it is logged.

Two warehouses (homes) over one TiDB database hold clean builds as of two days, A and B, so an export from
one or the other switches the serving tables between two known, distinguishable sets.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import pymysql
import pytest

from loaders import export as export_mod
from loaders.generate import GenerateSpec
from runner import dbt, lease, pipeline, tidb, warehouse
from runner.config import Settings, TiDBConfig
from tests.conftest import drop_databases, env_for, make_settings

pytestmark = pytest.mark.e2e
SPEC = GenerateSpec(users=2_000, items=300, orders=20_000, days=30, seed=31)
MARTS = {spec.table: spec for spec in export_mod.SERVING_TABLES}
Rows = dict[str, list[tuple[object, ...]]]  # serving table -> its rows, normalised and sorted
# What a reader of the serving contract sees, in one statement (so one consistent view of all tables):
# per object its rows, as-of dates and a sum.
OBSERVED = {
    "user_labels": "total_amount",
    "hot_items": "units_sold",
    "monthly_bills": "total_amount",
    "monthly_spending": "total_amount",
    "recommendations": "units_sold",
}
Observation = tuple[str, ...]


@dataclass(frozen=True)
class Stack:
    a: Settings  # warehouse built as of day_a
    b: Settings  # warehouse built as of day_b
    day_a: dt.date
    day_b: dt.date
    marts_a: Rows
    marts_b: Rows


def ecom(settings: Settings, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = env_for(settings) | ({"ECOM_FAILPOINT": failpoint} if failpoint else {})
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, capture_output=True, text=True, timeout=300)


def assert_killed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == -signal.SIGKILL, result.stdout[-1500:] + result.stderr[-1500:]


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]


def _normal(value: object) -> object:
    """One representation per value, whichever engine and driver returned it."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value)).normalize()
    if isinstance(value, dt.date):
        return value.isoformat()[:10]
    return str(value)


def _sorted(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return sorted((tuple(_normal(v) for v in row) for row in rows), key=repr)


def mart_rows(settings: Settings) -> Rows:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            found = {}
            for table, spec in MARTS.items():
                cur = conn.cursor()
                cur.execute(f"SELECT {', '.join(spec.columns.values())} FROM {cfg.database}.{cfg.schema}.{spec.mart}")
                found[table] = _sorted(list(cur.fetchall()))
            return found
        finally:
            conn.close()


def serving_rows(settings: Settings) -> Rows:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        found = {}
        for table, spec in MARTS.items():
            cur.execute(f"SELECT {', '.join(f'`{c}`' for c in spec.columns)} FROM {table}")
            found[table] = _sorted(list(cur.fetchall()))
        return found


def observe_sql(settings: Settings) -> str:
    db = settings.tidb.database
    return "SELECT " + ", ".join(
        f"(SELECT CONCAT_WS('|', COUNT(*), MIN(as_of_date), MAX(as_of_date), SUM({column})) FROM `{db}`.{name})"
        for name, column in OBSERVED.items()
    )


def observe(settings: Settings) -> Observation:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(observe_sql(settings))
        return tuple(str(v) for v in cur.fetchone() or ())


def leftovers(settings: Settings) -> set[str]:
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND (table_name LIKE '%%\\_\\_new' OR table_name LIKE '%%\\_\\_old')",
            (settings.tidb.database,),
        )
        return {row[0] for row in cur.fetchall()}


def logged_runs(settings: Settings, step: str) -> int:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        return int(tidb.scalar(cur, "SELECT COUNT(*) FROM pipeline_runs WHERE step = %s", (step,)))


def assert_whole(rows: Rows, day: dt.date) -> None:
    """Every table holds rows, all of one as-of date, with no duplicate key."""
    keys = {"user_labels": 1, "hot_items": 2, "monthly_bills": 2, "monthly_spending": 1}
    for table, table_rows in rows.items():
        assert table_rows, f"{table} is empty"
        assert {row[-1] for row in table_rows} == {day.isoformat()}, table
        assert len({row[: keys[table]] for row in table_rows}) == len(table_rows), f"duplicate keys in {table}"


class Reader(threading.Thread):
    """Polls the serving objects, one statement per observation, until stopped; errors are observations too."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.stopped = threading.Event()
        self.seen: list[Observation] = []

    def run(self) -> None:
        sql = observe_sql(self.settings)
        conn = tidb.connect(self.settings, self.settings.tidb.database)
        try:
            with conn.cursor() as cur:
                while not self.stopped.is_set():
                    try:
                        cur.execute(sql)
                        self.seen.append(tuple(str(v) for v in cur.fetchone() or ()))
                    except pymysql.err.MySQLError as exc:
                        self.seen.append(("error", str(exc)))
        finally:
            conn.close()

    def __enter__(self) -> Reader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(timeout=30)


@pytest.fixture(scope="module")
def stack(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Generated history, archived once; warehouse A transformed (built, tested, released) as of today, a
    copy of it as B as of five days earlier; the serving tables exported from A."""
    root = Path(tmp_path_factory.mktemp("crashtx"))
    a = make_settings(server, root / "a", "crashtx")
    b = replace(a, home=root / "b")
    today = a.today()
    day_a, day_b = today, today - dt.timedelta(days=5)
    tidb.init_schema(a)
    pipeline.run_generate(a, SPEC)
    pipeline.run_archive(a, today - dt.timedelta(days=SPEC.days), today - dt.timedelta(days=1))
    shutil.copytree(a.warehouse_dir, b.warehouse_dir)  # the same archive, another warehouse
    for settings, day in ((a, day_a), (b, day_b)):
        dbt.transform(settings, day, quiet=True)  # a clean build, tested and released: export takes only those
    marts_a, marts_b = mart_rows(a), mart_rows(b)
    assert_whole(marts_a, day_a)
    assert_whole(marts_b, day_b)
    export_mod.export(a)
    yield Stack(a=a, b=b, day_a=day_a, day_b=day_b, marts_a=marts_a, marts_b=marts_b)
    drop_databases(a)


def test_export_killed_at_every_point_never_shows_a_mix(stack: Stack) -> None:
    a, b = stack.a, stack.b
    export_mod.export(a)
    assert serving_rows(a) == stack.marts_a
    set_a = observe(a)
    export_mod.export(b)
    assert serving_rows(a) == stack.marts_b
    set_b = observe(a)
    assert set_a != set_b and all(part.count("|") == 3 for part in set_a + set_b), (set_a, set_b)
    assert stack.day_a.isoformat() in set_a[0] and stack.day_b.isoformat() in set_b[0]
    exports = logged_runs(a, "export")

    with Reader(a) as reader:
        # (a) exports from A (serving: B) killed at each point; between the swap and the drop, A is served
        assert_killed(ecom(a, "export", failpoint="export.between_tables"))
        assert observe(a) == set_b and leftovers(a) == {"user_labels__new"}
        assert_killed(ecom(a, "export", failpoint="export.before_swap"))
        assert observe(a) == set_b and leftovers(a) == {f"{t}__new" for t in MARTS}
        assert_killed(ecom(a, "export", failpoint="export.after_swap"))
        assert observe(a) == set_a and leftovers(a) == {f"{t}__old" for t in MARTS}
        assert serving_rows(a) == stack.marts_a
        assert_killed(ecom(a, "export", failpoint="export.before_run_log"))
        assert observe(a) == set_a and leftovers(a) == set()
        assert logged_runs(a, "export") == exports, "a killed export must not be logged"
        # (b) a whole export: A to B
        assert_ok(ecom(b, "export"))
        assert observe(b) == set_b and leftovers(a) == set()
    assert serving_rows(a) == stack.marts_b  # nothing lost, nothing doubled, nothing stale
    assert logged_runs(a, "export") == exports + 1

    errors = [seen for seen in reader.seen if seen[0] == "error"]
    assert errors == [], errors[:3]
    assert len(reader.seen) >= 20, "the reader hardly read: the test would prove nothing"
    neither = [seen for seen in reader.seen if seen not in (set_a, set_b)]
    assert neither == [], neither[:3]
    switches = [seen for i, seen in enumerate(reader.seen) if i == 0 or seen != reader.seen[i - 1]]
    assert switches == [set_b, set_a, set_b], "the reader saw the sets in another order than they were swapped in"


def test_a_second_export_waits_for_the_first(stack: Stack) -> None:
    """Exports take turns: else one's sweep drops the other's `__new` tables and its RENAME swaps in half-built ones."""
    a, b = stack.a, stack.b
    export_mod.export(a)
    set_a = observe(a)
    second = None
    try:
        with lease.hold(a, export_mod.lock_name(a.tidb.database), "export", 0):  # as an export in progress
            second = subprocess.Popen(
                [sys.executable, "-m", "runner", "export"],
                env=env_for(b),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert second.stderr is not None
            waiting = second.stderr.readline()  # bounded: the export gets to the lease within seconds, or dies
            assert "waiting up to" in waiting, "the second export ran without waiting for the first: " + waiting
            assert observe(a) == set_a and leftovers(a) == set(), "the waiting export touched the serving tables"
        out, err = second.communicate(timeout=120)
    finally:
        if second is not None and second.poll() is None:  # a failed assertion: do not leave it running
            second.kill()
            second.wait()
    assert second.returncode == 0, out[-1500:] + err[-1500:]
    assert serving_rows(a) == stack.marts_b and leftovers(a) == set()


def test_transform_killed_between_models_is_not_exported_and_reruns_clean(stack: Stack, tmp_path: Path) -> None:
    # a third warehouse, copied from A (archive + marts as of A), so the others stay as they are
    t = replace(stack.a, home=tmp_path / "t")
    shutil.copytree(stack.a.warehouse_dir, t.warehouse_dir)
    export_mod.export(stack.a)
    serving = observe(t)
    transforms = logged_runs(t, "transform")
    day_b = stack.day_b.isoformat()

    killed = ecom(t, "transform", "--as-of", day_b, failpoint="transform.after_model.fct_weekly_hot_items")
    assert_killed(killed)
    half = mart_rows(t)
    assert half["hot_items"] == stack.marts_b["hot_items"], "the model before the kill is built as of B"
    assert all(half[table] in (stack.marts_a[table], stack.marts_b[table]) for table in MARTS)
    assert any(half[table] == stack.marts_a[table] for table in MARTS), "the kill left no mart as of A"
    refused = ecom(t, "export")
    assert refused.returncode == 1 and "not from one transform" in refused.stderr, refused.stderr
    assert observe(t) == serving and leftovers(t) == set(), "a refused export must leave serving untouched"

    # rerun: the whole build runs again and passes (the marts released); killed only after it, before the run
    # is logged
    assert_killed(ecom(t, "transform", "--as-of", day_b, failpoint="transform.before_run_log"))
    assert mart_rows(t) == stack.marts_b, "the rebuilt marts differ from a clean build"
    assert logged_runs(t, "transform") == transforms

    assert_ok(ecom(t, "export"))
    assert serving_rows(t) == stack.marts_b
    assert leftovers(t) == set()
