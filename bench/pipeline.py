"""Time each pipeline step at a chosen scale and print a table (rows/s, peak RSS); also write it as JSON.

    python -m bench.pipeline --orders 100000      (or: make bench SCALE=100000)

Runs in its own databases (`ecom_bench`, `ecom_bench_express`) and its own warehouse files, so it never
touches the demo's data. A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import resource
import time
from collections.abc import Callable

import click

from loaders.generate import GenerateSpec
from runner import pipeline, serving, tidb
from runner.config import PROJECT_ROOT, Settings, TiDBConfig
from runner.output import console, show

RESULTS = PROJECT_ROOT / "bench" / "results"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(name: str, action: Callable[[], int], table: list[tuple[object, ...]]) -> None:
    """Run one step; `action` returns the rows it moved."""
    started = time.perf_counter()
    moved = action()
    seconds = time.perf_counter() - started
    table.append((name, moved, round(seconds, 2), round(moved / seconds) if moved else None, round(_peak_rss_mb())))


SERVING_QUERIES = {
    "recommendations": "SELECT * FROM recommendations WHERE user_id = %s ORDER BY `rank`",
    "order_tracking": "SELECT * FROM order_tracking WHERE user_id = %s ORDER BY ordered_at DESC LIMIT 20",
}


def _serving_latencies(settings: Settings, users: int, samples: int) -> dict[str, dict[str, float]]:
    """Query latency as an app with a pooled connection sees it (connecting is not part of it)."""
    rng = random.Random(7)
    found = {}
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        for name, sql in SERVING_QUERIES.items():
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                cur.execute(sql, (rng.randint(1, users),))
                cur.fetchall()
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            found[name] = {"p50": times[len(times) // 2], "p99": times[max(0, int(len(times) * 0.99) - 1)]}
    return found


@click.command()
@click.option("--orders", default=100_000, show_default=True, type=int)
@click.option("--days", default=120, show_default=True, type=int)
@click.option("--latency-samples", default=200, show_default=True, type=int)
def main(orders: int, days: int, latency_samples: int) -> None:
    base = Settings.from_env()
    tidb_cfg = TiDBConfig(**{**base.tidb.__dict__, "database": "ecom_bench", "express_database": "ecom_bench_express"})
    settings = Settings(tidb=tidb_cfg, home=base.home / "bench", profiles_dir=base.profiles_dir, target=base.target)
    spec = GenerateSpec(
        users=max(1_000, orders // 3), items=max(100, min(10_000, orders // 30)), orders=orders, days=days, seed=1
    )
    today = settings.today()
    rows: list[tuple[object, ...]] = []
    tidb.init_schema(settings)
    first, last = today - dt.timedelta(days=days), today - dt.timedelta(days=1)

    def generate() -> int:
        result = pipeline.run_generate(settings, spec)
        return result.users + result.items + result.orders + result.express

    def archive() -> int:
        result = pipeline.run_archive(settings, first, last)
        return result.users + result.items + result.orders + result.express

    def transform() -> int:
        pipeline.run_transform(settings, today, quiet=True)
        return orders  # the orders modelled

    _timed("generate+load", generate, rows)
    _timed("archive", archive, rows)
    _timed("transform", transform, rows)
    _timed("export", lambda: sum(pipeline.run_export(settings).rows.values()), rows)
    latencies = _serving_latencies(settings, spec.users, latency_samples)
    show(
        serving.Table(
            f"Pipeline at {orders:,} orders ({days} days)",
            ["step", "rows", "seconds", "rows/s", "peak RSS MB"],
            rows,
            note="; ".join(f"{q} p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms" for q, v in latencies.items())
            + f" (one open connection, {latency_samples} random users each)",
        )
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pipeline-{orders}-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps({"orders": orders, "days": days, "steps": rows, "serving_ms": latencies}, indent=2))
    console.print(f"written to {out.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
