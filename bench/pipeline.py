"""The pipeline at a chosen scale, each step timed in a process of its own (so its peak RSS is its own),
every figure also a ratio of the server's LOAD DATA throughput measured in the same run on the same rows.

    python -m bench.pipeline --orders 1000000      (or: make bench SCALE=1000000)

Runs in its own databases (`ecom_bench*`) and warehouse files (`.ecom/bench`), so it never touches the
demo's data. Prints a table and writes it as JSON to bench/results/. A benchmark, not a test: nothing here
asserts a speed.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import click
import numpy as np
import pandas as pd

from bench import latency, reference
from loaders import generate as generate_mod
from loaders.bulk import load_frame
from runner import pipeline, serving, tidb
from runner.config import PROJECT_ROOT, Settings, TiDBConfig
from runner.errors import EcomError
from runner.output import console, errors, show

RESULTS = PROJECT_ROOT / "bench" / "results"
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """What one bench run does: the history, and the day the daily steps handle (its last day)."""

    spec: generate_mod.GenerateSpec
    today: dt.date

    @property
    def last_day(self) -> dt.date:
        return self.today - dt.timedelta(days=1)

    @property
    def first_day(self) -> dt.date:
        return self.today - dt.timedelta(days=self.spec.days)


@dataclass(frozen=True)
class Step:
    step: str
    rows: int
    seconds: float
    peak_rss_mb: float
    what: str

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _generate_only(settings: Settings, plan: Plan) -> int:
    """Generation alone, into memory and dropped: the client's side of the load."""
    return sum(len(frame) for _, frame in generate_mod.generated_batches(plan.spec, plan.today, settings.now()))


def _load_data(settings: Settings, plan: Plan) -> tuple[int, float]:
    return reference.load_data_reference(settings, plan.spec, plan.today)


def _generate(settings: Settings, plan: Plan) -> int:
    result = pipeline.run_generate(settings, plan.spec)
    return result.users + result.items + result.orders + result.express


def _archive_history(settings: Settings, plan: Plan) -> int:
    result = pipeline.run_archive(settings, plan.first_day, plan.last_day - dt.timedelta(days=1))
    return result.users + result.items + result.orders + result.express


def _archive_day(settings: Settings, plan: Plan) -> int:
    result = pipeline.run_archive(settings, plan.last_day, plan.last_day)
    return result.orders + result.express


def _archived_orders(settings: Settings, first: dt.date, last: dt.date) -> int:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        start, end = dt.datetime.combine(first, dt.time()), dt.datetime.combine(last, dt.time())
        sql = "SELECT COUNT(*) FROM orders WHERE created_at >= %s AND created_at < %s"
        return int(tidb.scalar(cur, sql, (start, end)))


def _transform_history(settings: Settings, plan: Plan) -> int:
    pipeline.run_transform(settings, plan.last_day, quiet=True)
    return _archived_orders(settings, plan.first_day, plan.last_day)


def _transform_day(settings: Settings, plan: Plan) -> int:
    pipeline.run_transform(settings, plan.today, quiet=True)
    return _archived_orders(settings, plan.last_day, plan.today)


def _export(settings: Settings, plan: Plan) -> int:
    return sum(pipeline.run_export(settings).rows.values())


# (step, what its rows are, action); actions return the rows they moved (or rows and their own seconds)
STEPS: list[tuple[str, str, Callable[[Settings, Plan], int | tuple[int, float]]]] = [
    ("LOAD DATA (reference)", "users+items+orders+expresses, LOAD DATA alone", _load_data),
    ("generate (no load)", "users+items+orders+expresses generated in memory", _generate_only),
    ("generate+load", "users+items+orders+expresses, `ecom generate`", _generate),
    ("archive history", "every day but the last, + users/items snapshots", _archive_history),
    ("transform history", "orders modelled, full build as of the last day", _transform_history),
    ("archive one day", "orders+expresses of the last day", _archive_day),
    ("transform one day", "orders of the day added, daily build as of today", _transform_day),
    ("export", "rows written to the serving tables", _export),
]


def _run_step(index: int, settings: Settings, plan: Plan) -> tuple[int, float, float]:
    """In a child process: (rows, seconds, peak RSS MB of this process)."""
    _, _, action = STEPS[index]
    started = time.perf_counter()
    outcome = action(settings, plan)
    seconds = time.perf_counter() - started
    rows, seconds = outcome if isinstance(outcome, tuple) else (outcome, seconds)
    return rows, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_in_child(name: str, action: Callable[..., T], *args: object) -> T:
    """`action(*args)` in a fresh interpreter (spawned: nothing inherited), so its peak RSS is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(action, *args).result()
        except EcomError as exc:
            raise EcomError(f"bench step {name!r} failed: {exc.what}", exc.fix) from None
        except BrokenProcessPool:
            raise EcomError(f"bench step {name!r} died (killed, or out of memory?)", "see the kernel log") from None


def _todays_orders(settings: Settings, plan: Plan) -> int:
    """An average day's orders stamped since midnight, so the dashboard has a real 'today' to scan."""
    rng = np.random.default_rng(plan.spec.seed + 1)
    count = max(1, plan.spec.orders // plan.spec.days)
    now = settings.now()
    midnight = dt.datetime.combine(now.date(), dt.time())
    seconds = max(1, int((now - midnight).total_seconds()))
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, price FROM items")
        items = pd.DataFrame(cur.fetchall(), columns=["id", "price"])
        picked = items.iloc[rng.integers(0, len(items), count)]
        units = rng.integers(1, 4, count)
        frame = pd.DataFrame(
            {
                "user_id": rng.integers(1, plan.spec.users + 1, count),
                "item_id": picked["id"].to_numpy(),
                "item_count": units,
                "amount": np.round(picked["price"].to_numpy().astype(float) * units, 2),
                "created_at": np.sort(np.datetime64(midnight, "s") + rng.integers(0, seconds, count).astype("m8[s]")),
            }
        )
        return load_frame(conn, "orders", frame)


def bench_settings(name: str) -> Settings:
    base = Settings.from_env()
    cfg = TiDBConfig(**{**base.tidb.__dict__, "database": name, "express_database": f"{name}_express"})
    return Settings(tidb=cfg, home=base.home / name, profiles_dir=base.profiles_dir, target=base.target)


def run(
    settings: Settings, spec: generate_mod.GenerateSpec, clients: int, samples: int, out_dir: Path
) -> tuple[dict[str, object], Path]:
    plan = Plan(spec, settings.today())
    tidb.init_schema(settings)
    steps: list[Step] = []
    for index, (name, what, _) in enumerate(STEPS):
        console.print(f"[dim]{name} …[/dim]")
        rows, seconds, rss = run_in_child(name, _run_step, index, settings, plan)
        steps.append(Step(name, rows, round(seconds, 3), round(rss), what))
    today_rows = _todays_orders(settings, plan)
    per_user = {  # alone, then under concurrency: what the clients' sharing of the cores adds
        f"{query}, {n} client{'s' if n > 1 else ''}": figures
        for n in sorted({1, clients})
        for query, figures in latency.per_user_latency(settings, spec.users, n, samples).items()
    }
    dashboard = latency.dashboard_latency(settings, max(20, samples // 4))
    reference_rate = steps[0].rows_per_s
    result: dict[str, object] = {
        "orders": spec.orders,
        "spec": asdict(spec) | {"end_day": plan.today.isoformat()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "server": _server_version(settings)},
        "load_data_rows_per_s": round(reference_rate),
        "steps": [
            asdict(s) | {"rows_per_s": round(s.rows_per_s), "vs_load_data": round(s.rows_per_s / reference_rate, 3)}
            for s in steps
        ],
        "serving_ms": {"clients": clients, "samples_per_client": samples, **per_user},
        "dashboard_ms": {"todays_orders": today_rows, "history_orders": spec.orders, **dashboard},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"pipeline-{spec.orders}-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    return result, out


def _server_version(settings: Settings) -> str:
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        return str(tidb.scalar(cur, "SELECT VERSION()"))


def print_result(result: dict[str, object]) -> None:
    steps = result["steps"]
    assert isinstance(steps, list)
    spec = result["spec"]
    assert isinstance(spec, dict)
    show(
        serving.Table(
            f"Pipeline at {spec['orders']:,} orders ({spec['users']:,} users, {spec['items']:,} items, "
            f"{spec['days']} days)",
            ["step", "rows", "seconds", "rows/s", "vs LOAD DATA", "peak RSS MB", "rows are"],
            [
                tuple(s[k] for k in ("step", "rows", "seconds", "rows_per_s", "vs_load_data", "peak_rss_mb", "what"))
                for s in steps
            ],
            note=f"vs LOAD DATA: rows/s over {result['load_data_rows_per_s']:,} rows/s, the server's LOAD DATA LOCAL "
            "INFILE of the same rows into empty copies of the same tables, measured in this run",
        )
    )
    for title, key in (("Serving", "serving_ms"), ("Today's dashboard", "dashboard_ms")):
        figures = result[key]
        assert isinstance(figures, dict)
        rows = [(name, v["p50"], v["p99"], v["max"], v["n"]) for name, v in figures.items() if isinstance(v, dict)]
        context = {k: v for k, v in figures.items() if not isinstance(v, dict)}
        show(
            serving.Table(
                f"{title} latency, ms", ["query", "p50", "p99", "max", "samples"], rows, note=json.dumps(context)
            )
        )


@click.command()
@click.option("--orders", default=100_000, show_default=True, type=click.IntRange(1_000, 10**9))
@click.option("--days", default=150, show_default=True, type=click.IntRange(8, 3650))
@click.option("--clients", default=8, show_default=True, type=click.IntRange(1, 64), help="concurrent serving clients")
@click.option("--samples", default=200, show_default=True, type=click.IntRange(10, 10**6), help="queries per client")
@click.option("--name", default="ecom_bench", show_default=True, help="prefix of the bench's databases and home")
@click.option("--results", default=str(RESULTS), show_default=True, type=click.Path(file_okay=False))
def main(orders: int, days: int, clients: int, samples: int, name: str, results: str) -> None:
    settings = bench_settings(name)
    spec = generate_mod.GenerateSpec(
        users=max(1_000, orders // 3), items=max(100, min(10_000, orders // 30)), orders=orders, days=days, seed=1
    )
    try:
        result, out = run(settings, spec, clients, samples, Path(results))
    except EcomError as exc:
        errors.print(f"error: {exc}", markup=False)
        sys.exit(1)
    print_result(result)
    console.print(f"written to {out.relative_to(PROJECT_ROOT) if out.is_relative_to(PROJECT_ROOT) else out}")


if __name__ == "__main__":
    main()
