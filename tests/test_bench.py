"""The benchmark at a tiny scale, as a smoke test: every step runs, the figures are whole and consistent.
Speeds are not asserted (a benchmark, not a timed test); what the figures count is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.pipeline import STEPS
from runner.config import PROJECT_ROOT, Settings
from tests.conftest import drop_databases, env_for

pytestmark = pytest.mark.e2e
ORDERS, DAYS = 3_000, 10


def test_bench_runs_every_step_and_writes_its_table(settings: Settings, tmp_path: Path) -> None:
    results = tmp_path / "results"
    name = settings.tidb.database  # the bench makes <name>, <name>_express and <name>_ref
    args = ["--orders", str(ORDERS), "--days", str(DAYS), "--clients", "2", "--samples", "20"]
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "bench.pipeline", *args, "--name", name, "--results", str(results)],
            cwd=PROJECT_ROOT,
            env=env_for(settings),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        drop_databases(settings)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "vs LOAD DATA" in ran.stdout and "Serving latency" in ran.stdout
    (written,) = results.glob("pipeline-*.json")
    result = json.loads(written.read_text())

    steps = {s["step"]: s for s in result["steps"]}
    assert list(steps) == [name for name, _, _ in STEPS]
    assert all(s["seconds"] > 0 and s["rows_per_s"] > 0 and s["peak_rss_mb"] > 50 for s in steps.values())
    users, items = result["spec"]["users"], result["spec"]["items"]
    generated = users + items + 2 * ORDERS  # an express per order
    # the reference loads the very rows generate makes
    assert steps["LOAD DATA (reference)"]["rows"] == steps["generate+load"]["rows"] == generated
    assert steps["generate (no load)"]["rows"] == generated
    assert steps["generate+load"]["vs_load_data"] == pytest.approx(
        steps["generate+load"]["rows_per_s"] / result["load_data_rows_per_s"], rel=0.01
    )
    last_day = steps["archive one day"]["rows"]
    assert 0 < last_day < 2 * ORDERS
    assert steps["archive history"]["rows"] + last_day == generated, "every row archived once"
    assert steps["transform history"]["rows"] + steps["transform one day"]["rows"] == ORDERS
    assert steps["export"]["rows"] > 20  # labels for the buyers, 20 hot items, bills
    for query in ("recommendations", "order_tracking"):
        for clients in (1, 2):
            figures = result["serving_ms"][f"{query}, {clients} client{'s' if clients > 1 else ''}"]
            assert figures["n"] == clients * 20
            assert 0 < figures["p50"] <= figures["p99"] <= figures["max"]
    assert result["dashboard_ms"]["todays_orders"] == ORDERS // DAYS
    assert set(result["dashboard_ms"]) >= {"today_sales", "today_sales_by_type", "today_sales_by_hour"}

    growth = subprocess.run(
        [sys.executable, "-m", "bench.growth", "--results", str(results)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert growth.returncode == 0 and "archive one day" in growth.stdout, growth.stderr
