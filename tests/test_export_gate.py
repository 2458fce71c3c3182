"""Export publishes only marts that a transform released after every model and data test passed.

A transform killed -9 while its tests run, one whose data test fails, and a plain `ecom dbt run` (which
rebuilds the marts without their tests) each leave the marts unreleased: `ecom export` then refuses with one
line and exit 1, and the serving tables stay exactly as they were (rows and export time). A transform that
passes releases its marts, and the export says which as-of date it publishes. A dbt build that starts while
an export loads is caught just before the swap.

One prepared shop (generated, archived, transformed as of day 0) is copied for each test: a warehouse of
its own over the shared TiDB database, whose serving tables each test first sets to its day-0 marts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaders import export as export_mod
from loaders.generate import GenerateSpec
from runner import dbt, failpoints, pipeline, release, tidb, warehouse
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError
from tests.conftest import drop_databases, make_settings, run_ecom
from tests.test_crash_transform_export import MARTS, assert_whole, leftovers, mart_rows, serving_rows

pytestmark = pytest.mark.e2e
SPEC = GenerateSpec(users=2_000, items=300, orders=20_000, days=30, seed=53)
Fingerprint = tuple[object, ...]


@dataclasses.dataclass(frozen=True)
class Shop:
    settings: Settings
    day0: dt.date  # the as-of date the prepared marts were released for
    day1: dt.date  # a later one, for the transforms under test


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    settings = make_settings(server, Path(tmp_path_factory.mktemp("gate")) / "shop", "gate")
    today = settings.today()
    tidb.init_schema(settings)
    pipeline.run_generate(settings, SPEC)
    pipeline.run_archive(settings, today - dt.timedelta(days=SPEC.days), today - dt.timedelta(days=1))
    day0 = today - dt.timedelta(days=2)
    pipeline.run_transform(settings, day0, quiet=True)
    yield Shop(settings, day0, today - dt.timedelta(days=1))
    drop_databases(settings)


@pytest.fixture
def exported(shop: Shop, tmp_path: Path) -> Settings:
    """A copy of the shop's home (warehouse, dbt target) over its TiDB database, the day-0 marts exported."""
    copy = dataclasses.replace(shop.settings, home=tmp_path / "home")
    shutil.copytree(shop.settings.home, copy.home)
    export_mod.export(copy)
    assert_whole(serving_rows(copy), shop.day0)
    return copy


def fingerprint(settings: Settings) -> Fingerprint:
    """The serving tables' rows, when they were exported, and any `__new`/`__old` table: an export that
    swapped in the very same rows again would still change it."""
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        stamps = []
        for table in MARTS:
            cur.execute(f"SELECT COUNT(*), MIN(exported_at), MAX(exported_at) FROM {table}")
            stamps.append(cur.fetchone())
    return serving_rows(settings), stamps, leftovers(settings)


def warehouse_sql(settings: Settings, sql: str) -> None:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            conn.cursor().execute(
                sql.format(raw=f"{cfg.database}.{cfg.raw_schema}", marts=f"{cfg.database}.{cfg.schema}")
            )
        finally:
            conn.close()


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout[-2000:] + result.stderr[-2000:]


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 1 and one line on stderr, naming what is wrong and what to run."""
    assert result.returncode == 1, output(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in (*fragments, "run `ecom transform` until it passes"):
        assert fragment in lines[0], lines[0]


def test_transform_killed_during_its_tests_is_not_exported(shop: Shop, exported: Settings) -> None:
    before = fingerprint(exported)
    killed = run_ecom(exported, "transform", "--as-of", str(shop.day1), ECOM_FAILPOINT="transform.during_tests")
    assert killed.returncode == -signal.SIGKILL, output(killed)
    # every mart already rebuilt as of day 1, whole: what an export that does not ask would publish
    assert_whole(mart_rows(exported), shop.day1)

    refused = run_ecom(exported, "export")
    assert_refused(refused, f"the marts as of {shop.day1} did not pass their tests")
    assert fingerprint(exported) == before, "a refused export must leave the serving tables as they were"
    status = run_ecom(exported, "status")
    assert f"marts as of {shop.day1}, unfinished or failed" in " ".join(status.stdout.split()), status.stdout

    # the same transform, run to the end, releases the marts: the export publishes them and says which
    passed = run_ecom(exported, "transform", "--as-of", str(shop.day1))
    assert passed.returncode == 0 and "released for export" in passed.stdout, output(passed)
    published = run_ecom(exported, "export")
    assert published.returncode == 0, output(published)
    assert f"exported the marts as of {shop.day1}, released by the transform that passed at " in published.stdout
    assert serving_rows(exported) == mart_rows(exported)
    assert_whole(serving_rows(exported), shop.day1)
    status = run_ecom(exported, "status")
    assert f"marts as of {shop.day1}, passed at" in " ".join(status.stdout.split()), status.stdout


def test_transform_whose_data_test_fails_is_not_exported(shop: Shop, exported: Settings) -> None:
    before = fingerprint(exported)
    # an order archived twice: the unique test on RAW.ORDERS.ID fails, for real
    warehouse_sql(
        exported, "INSERT INTO {raw}.ORDERS SELECT * FROM {raw}.ORDERS WHERE ID = (SELECT MIN(ID) FROM {raw}.ORDERS)"
    )
    failed = run_ecom(exported, "transform", "--as-of", str(shop.day1))
    assert failed.returncode == 1, output(failed)
    assert "source_unique_raw_orders_id" in failed.stderr and "not released" in failed.stderr, failed.stderr

    refused = run_ecom(exported, "export")
    assert_refused(refused, f"the marts as of {shop.day1} did not pass their tests")
    assert fingerprint(exported) == before, "a refused export must leave the serving tables as they were"


def test_a_plain_dbt_run_unreleases_the_marts(shop: Shop, exported: Settings) -> None:
    kept = release.current(exported)
    assert kept is not None and kept.passed and kept.as_of_date == shop.day0, kept
    tested = run_ecom(exported, "dbt", "test", "--select", "dim_user_labels")
    assert tested.returncode == 0, output(tested)
    assert release.current(exported) == kept, "`dbt test` rebuilds nothing: the release stays as it was"
    before = fingerprint(exported)

    rebuilt = run_ecom(exported, "dbt", "run")  # every model rebuilt (as of today), none of the tests run
    assert rebuilt.returncode == 0, output(rebuilt)
    refused = run_ecom(exported, "export")
    assert_refused(refused, f"the marts as of {exported.today()} did not pass their tests")
    assert fingerprint(exported) == before


def test_marts_without_a_release_record_are_not_exported(exported: Settings) -> None:
    """A warehouse whose marts were built before releases existed: nothing is known to have passed."""
    before = fingerprint(exported)
    warehouse_sql(exported, f"DROP TABLE {{marts}}.{release.TABLE}")
    with pytest.raises(EcomError, match="no transform has passed on these marts yet"):
        export_mod.export(exported)
    assert fingerprint(exported) == before


def test_a_build_started_during_the_export_is_not_swapped_in(
    shop: Shop, exported: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release is read again just before the swap: a dbt command that started while the export loaded
    (it marks the release before touching a mart) makes the rows loaded suspect, so nothing is swapped."""
    before = fingerprint(exported)
    gate = tmp_path / "gate"
    monkeypatch.setenv(failpoints.PAUSE_ENV, f"export.before_swap={gate}")
    failure: list[BaseException] = []

    def export() -> None:
        try:
            export_mod.export(exported)
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    exporting = threading.Thread(target=export, daemon=True)
    exporting.start()
    try:
        for _ in range(1200):  # bounded: the export reaches the swap within seconds
            if Path(f"{gate}.reached").exists() or not exporting.is_alive():
                break
            threading.Event().wait(0.05)
        assert Path(f"{gate}.reached").exists(), f"the export never reached the swap: {failure}"
        # a real dbt command, in this process (the stand-in's files take one process at a time)
        assert dbt.run(exported, ["run", "--select", "fct_monthly_spending"], shop.day1, quiet=True).success
    finally:
        gate.touch()
        exporting.join(timeout=120)
    assert not exporting.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], EcomError), failure
    assert "changed while they were exported" in str(failure[0]), failure[0]
    assert fingerprint(exported) == before, "nothing may be swapped in, and no `__new` table left"
