"""Serving latency as apps see it: clients with an open connection each, querying concurrently."""

from __future__ import annotations

import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor

from runner import tidb
from runner.config import Settings

# The reads the CLI's `recommend`, `orders` and `dashboard` make (runner/serving.py), one user or today.
PER_USER = {
    "recommendations": "SELECT * FROM recommendations WHERE user_id = %s ORDER BY `rank`",
    "order_tracking": "SELECT * FROM order_tracking WHERE user_id = %s "
    "ORDER BY ordered_at DESC, order_id DESC LIMIT 20",
}
DASHBOARD = {
    "today_sales": "SELECT * FROM today_sales",
    "today_sales_by_type": "SELECT * FROM today_sales_by_type ORDER BY total_amount DESC",
    "today_sales_by_hour": "SELECT * FROM today_sales_by_hour ORDER BY hour_of_day",
}
WARMUP = 20


def _client(settings: Settings, sql: str, users: int, samples: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    times = []
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        for n in range(WARMUP + samples):
            params = (rng.randint(1, users),) if "%s" in sql else ()
            started = time.perf_counter()
            cur.execute(sql, params)
            cur.fetchall()
            if n >= WARMUP:
                times.append((time.perf_counter() - started) * 1000)
    return times


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 2), "n": len(ordered)}


def per_user_latency(settings: Settings, users: int, clients: int, samples: int) -> dict[str, dict[str, float]]:
    """Each query by `clients` processes at once (processes, not threads: the client side must not queue on
    one interpreter's lock), `samples` random users each."""
    found = {}
    with ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name, sql in PER_USER.items():
            jobs = [pool.submit(_client, settings, sql, users, samples, seed) for seed in range(clients)]
            found[name] = percentiles([t for job in jobs for t in job.result()])
    return found


def dashboard_latency(settings: Settings, samples: int) -> dict[str, dict[str, float]]:
    return {name: percentiles(_client(settings, sql, 1, samples, 0)) for name, sql in DASHBOARD.items()}
