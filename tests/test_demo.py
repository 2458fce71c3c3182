"""`ecom demo` twice on small data: the first run resets, the second reuses, both serve recommendations."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from loaders.generate import GenerateSpec
from runner import pipeline
from runner.config import Settings, TiDBConfig
from tests.conftest import drop_databases, env_for, make_settings

SMALL = GenerateSpec(users=800, items=120, orders=6_000, days=40, seed=5)


@pytest.fixture(scope="module")
def twice(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list]]:
    settings = make_settings(server, tmp_path_factory.mktemp("demo"), "demo")
    reports = [pipeline.demo(settings, SMALL, stream_seconds=1.5, stream_rate=10) for _ in range(2)]
    yield settings, reports
    drop_databases(settings)


def test_demo_resets_then_reuses(twice: tuple[Settings, list]) -> None:
    _, (first, second) = twice
    steps_first, steps_second = dict((n, d) for n, _, d in first.steps), dict((n, d) for n, _, d in second.steps)
    assert steps_first["generate"].startswith("reset (no data yet)")
    assert steps_second["generate"].startswith("reused")
    assert steps_second["archive"].startswith("reused")
    assert [s[0] for s in second.steps] == ["init", "generate", "archive", "transform", "export", "stream"]
    labels = {t.note.split("'")[1] for t in second.recommendations}
    assert labels == {"high", "low"}
    assert all(len(t.rows) == 10 for t in second.recommendations)


def test_cli_json_and_dbt_passthrough(twice: tuple[Settings, list]) -> None:
    settings, _ = twice
    env = env_for(settings)

    def ecom(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args], env=env, capture_output=True, text=True, timeout=300
        )

    dashboard = ecom("dashboard", "--json")
    assert dashboard.returncode == 0, dashboard.stderr
    tables = json.loads(dashboard.stdout)
    assert [t["title"] for t in tables][:2] == ["Today", "Today by item type"]
    assert tables[0]["rows"][0]["order_count"] >= 1
    hot = [t for t in tables if t["title"].startswith("Hot items")]
    assert [len(t["rows"]) for t in hot] == [10, 10]
    status = ecom("status", "--json")
    assert status.returncode == 0 and "RAW.ORDERS" in status.stdout
    docs = ecom("dbt", "docs", "generate")
    assert docs.returncode == 0, docs.stdout[-2000:] + docs.stderr
    assert (settings.home / "dbt" / "target" / "catalog.json").is_file()


def test_demo_resets_when_the_spec_changes(twice: tuple[Settings, list]) -> None:
    settings, _ = twice
    bigger = GenerateSpec(**{**SMALL.__dict__, "orders": 6_500})
    third = pipeline.demo(settings, bigger, stream_seconds=1, stream_rate=5)
    assert dict((n, d) for n, _, d in third.steps)["generate"].startswith("reset (the data was for another")


def test_demo_rebuilds_an_archive_with_foreign_days(twice: tuple[Settings, list]) -> None:
    """A day in the warehouse that the current data does not have (another checkout archived it)
    makes the demo archive from scratch rather than model it beside the current days."""
    settings, _ = twice
    spec = GenerateSpec(**{**SMALL.__dict__, "orders": 6_500})
    pipeline.demo(settings, spec, stream_seconds=1, stream_rate=5)
    first = settings.today() - dt.timedelta(days=spec.days)
    yesterday = settings.today() - dt.timedelta(days=1)
    pipeline.run_archive(settings, first - dt.timedelta(days=3), first - dt.timedelta(days=3))
    assert not pipeline.archive_is_exactly(settings, first, yesterday)
    again = pipeline.demo(settings, spec, stream_seconds=1, stream_rate=5)
    steps = dict((n, d) for n, _, d in again.steps)
    assert steps["generate"].startswith("reused") and not steps["archive"].startswith("reused")
    assert pipeline.archive_is_exactly(settings, first, yesterday)
