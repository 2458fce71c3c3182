"""`ecom transform` runs `dbt source freshness` before it builds: ARCHIVED_AT is stored in UTC, as dbt
compares it; a stale archive is a warning line, a very stale one stops the transform before anything is built."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaders.generate import GenerateSpec
from runner import pipeline, tidb, warehouse
from runner.config import Settings, TiDBConfig
from tests.conftest import drop_databases, make_settings, run_ecom

SPEC = GenerateSpec(users=300, items=40, orders=2_000, days=9, seed=3)
RAW_TABLES = ("ORDERS", "EXPRESS", "USERS", "ITEMS", "ARCHIVE_LOG")


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = make_settings(server, Path(tmp_path_factory.mktemp("fresh")), "fresh")
    tidb.init_schema(settings)
    pipeline.run_generate(settings, SPEC)
    today = settings.today()
    pipeline.run_archive(settings, today - dt.timedelta(days=SPEC.days), today - dt.timedelta(days=1))
    yield settings
    drop_databases(settings)


def _raw(settings: Settings, *statements: str) -> list[tuple[object, ...]]:
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            cur = conn.cursor()
            for statement in statements:
                cur.execute(statement)
            return list(cur.fetchall())
        finally:
            conn.close()


def _age(settings: Settings, days: int, tables: tuple[str, ...] = RAW_TABLES) -> None:
    """Make RAW tables look archived `days` days ago."""
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")
    _raw(settings, *(f"UPDATE {table} SET ARCHIVED_AT = '{stamp}'" for table in tables), "SELECT 1")


def _marts(settings: Settings) -> list[tuple[object, ...]]:
    cfg = settings.warehouse()
    return _raw(
        settings,
        f"SELECT table_name FROM {cfg.database}.information_schema.tables WHERE table_schema = '{cfg.schema}' "
        "AND table_name LIKE 'DIM_%'",
    )


def test_archived_at_is_utc(shop: Settings) -> None:
    ((newest,),) = _raw(shop, "SELECT MAX(ARCHIVED_AT) FROM ARCHIVE_LOG")
    assert isinstance(newest, dt.datetime)
    assert abs(newest - dt.datetime.now(dt.UTC).replace(tzinfo=None)) < dt.timedelta(minutes=10)


def test_snapshots_not_copied_again_do_not_make_the_archive_stale(shop: Settings) -> None:
    """Users/items are copied only when they changed, so their ARCHIVED_AT may be old: freshness is the
    archive log's, which every run writes."""
    _age(shop, 30, ("USERS", "ITEMS"))
    result = run_ecom(shop, "transform")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stale" not in result.stderr


def test_a_very_stale_archive_stops_the_transform_before_it_builds(shop: Settings) -> None:
    cfg = shop.warehouse()
    _raw(shop, f"DROP TABLE IF EXISTS {cfg.database}.{cfg.schema}.DIM_USER_LABELS", "SELECT 1")  # built earlier
    _age(shop, 8)  # past error_after (7 days)
    result = run_ecom(shop, "transform")
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "freshness limit" in errors[0] and "ecom archive" in errors[0], result.stderr
    assert _marts(shop) == [], "the transform built marts on a stale archive"


def test_a_stale_archive_is_a_warning_and_the_build_runs(shop: Settings) -> None:
    _age(shop, 3)  # past warn_after (2 days), within error_after
    result = run_ecom(shop, "transform")
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "stale" in line]
    assert warnings, result.stderr
    assert _marts(shop) != []
