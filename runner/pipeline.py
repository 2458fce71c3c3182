"""Steps composed: each step records itself in the run log; the demo runs them all, timed."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loaders import archive as archive_mod
from loaders import dataset as dataset_mod
from loaders import export as export_mod
from loaders import generate as generate_mod
from loaders import purge as purge_mod
from loaders import stream as stream_mod
from loaders import verify as verify_mod
from runner import dbt, release, retry, runs, serving, tidb, warehouse
from runner.config import Settings
from runner.errors import EcomError, env_secrets, redact

T = TypeVar("T")
log = logging.getLogger("ecom")

Progress = Callable[[str, int, int], None]


def run_generate(
    settings: Settings, spec: generate_mod.GenerateSpec, progress: Progress | None = None
) -> generate_mod.GenerateResult:
    started = settings.now()
    spec.validate()
    # generate checks first that this machine can finish it (`generate.preflight`), before anything is written;
    # the archive is dropped only once the new dataset is whole, right before generate swaps it in
    result = archive_mod.replace_history(
        settings, lambda drop_archive: retried(lambda: generate_mod.generate(settings, spec, progress, drop_archive))
    )
    runs.record(
        settings,
        "generate",
        started,
        f"{result.orders} orders over {result.first_day}..{result.last_day}, seed {spec.seed}",
    )
    return result


def _warn_retry(attempt: int, delay: float, exc: BaseException) -> None:
    log.warning("%s — retrying in %.1fs (attempt %d failed)", redact(str(exc), env_secrets()), delay, attempt)


def retried(action: Callable[[], T]) -> T:
    """Run an idempotent step again after a transient failure (see runner.retry)."""
    return retry.retrying(action, on_retry=_warn_retry)


def run_archive(
    settings: Settings,
    first: dt.date,
    last: dt.date,
    progress: Progress | None = None,
    *,
    allow_removal: bool = False,
) -> archive_mod.ArchiveResult:
    """Archive [first, last] in runs of whole days holding up to `archive.snapshot_orders` orders (a day holding
    more is a run of its own), each committed whole and retried whole: a backfill of years keeps one run's
    rows in flight, and a failure keeps the runs before it."""
    started = settings.now()
    archive_mod.check_range(settings, first, last)
    # bounded in memory, and in time: no snapshot outlives ECOM_MAX_TRANSACTION_SECONDS at the planned rate
    per_run = archive_mod.snapshot_orders(settings)
    chunks = retried(lambda: archive_mod.runs_of_days(settings, first, last, per_run))
    one_run = functools.partial(archive_mod.archive, settings, progress=progress, allow_removal=allow_removal)
    result = archive_mod.ArchiveResult.combined([retried(functools.partial(one_run, c[0], c[-1])) for c in chunks])
    runs.record(
        settings,
        "archive",
        started,
        f"{first}..{last}: {result.orders} orders, {result.express} expresses, amount {result.amount:.2f}",
    )
    return result


def run_recheck(
    settings: Settings,
    before: dt.date,
    days: int,
    progress: Progress | None = None,
    *,
    allow_removal: bool = False,
) -> list[dt.date]:
    """Verify the `days` days before `before` and archive again those that changed since they were archived
    (late rows, shipments that moved on). Purged days are left alone; a day that TiDB lost archived rows of
    is refused unless `allow_removal` (see `archive.archive`). Returns the days archived again."""
    if days <= 0:
        return []
    first, last = before - dt.timedelta(days=days), before - dt.timedelta(days=1)
    report = retried(lambda: verify_mod.verify(settings, first, last, daily_only=True))
    stale = [day for day in report.stale_days() if day not in report.purged]
    if not allow_removal:  # refused before any day is archived again (the publish checks each row by id too)
        shrunk = [c for c in report.checks if c.day in stale and c.tidb.rows < c.warehouse.rows]
        if shrunk:
            c, day = shrunk[0], stale[0] if shrunk[0].day is None else shrunk[0].day
            gone = f"at least {c.warehouse.rows - c.tidb.rows} of its {c.warehouse.rows} archived"
            raise archive_mod.removal_refused(c.table, day, gone, c.tidb.rows, len(shrunk) - 1)
    for low, high in verify_mod.runs_of(stale):
        run_archive(settings, low, high, progress, allow_removal=allow_removal)
    return stale


def run_verify(settings: Settings, first: dt.date | None, last: dt.date | None) -> verify_mod.VerifyReport:
    if first is None or last is None:
        return retried(lambda: verify_mod.verify_archived(settings))
    return retried(lambda: verify_mod.verify(settings, first, last))


def run_purge(settings: Settings, older_than_days: int, progress: Progress | None = None) -> purge_mod.PurgeResult:
    started = settings.now()
    result = retried(lambda: purge_mod.purge(settings, older_than_days, progress))
    runs.record(
        settings,
        "purge",
        started,
        f"before {result.cutoff}: {len(result.purged)} days, {result.orders} orders, {result.express} expresses "
        f"deleted from TiDB; {len(result.kept)} unproven days kept",
    )
    return result


def run_transform(settings: Settings, as_of: dt.date, quiet: bool = False) -> dbt.DbtOutcome:
    started = settings.now()
    require_archive(settings, as_of)
    dataset_mod.require_whole(settings)
    outcome = dbt.transform(settings, as_of, quiet)
    runs.record(
        settings, "transform", started, f"as of {as_of}: {len(outcome.results)} dbt nodes passed, marts released"
    )
    return outcome


def run_export(settings: Settings) -> export_mod.ExportResult:
    dataset_mod.require_whole(settings)
    started = settings.now()
    result = retried(lambda: export_mod.export(settings))
    runs.record(
        settings,
        "export",
        started,
        f"as of {result.as_of_date} (released {release.utc_text(result.released_at)}): "
        + ", ".join(f"{t} {n}" for t, n in result.rows.items()),
    )
    return result


def archived_order_days(settings: Settings) -> set[dt.date]:
    """The days the archive log says the warehouse holds orders for (empty for a new warehouse)."""
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            if not warehouse.table_exists(conn, cfg, cfg.raw_schema, "ARCHIVE_LOG"):
                return set()
            cur = conn.cursor()
            cur.execute("SELECT DISTINCT ARCHIVE_DATE FROM ARCHIVE_LOG WHERE TABLE_NAME = 'ORDERS'")
            return {row[0] for row in cur.fetchall()}
        finally:
            conn.close()


def require_archive(settings: Settings, as_of: dt.date) -> None:
    """Refuse to model what is not archived: an empty warehouse, or a hole in the hot-items week
    (a missing day would silently shrink the window and drop a day from every label)."""
    archived = {day for day in archived_order_days(settings) if day < as_of}
    if not archived:
        raise EcomError("the warehouse has no archived orders", "run `ecom archive` (after `ecom generate`) first")
    window_days = int(dbt.project_var("hot_items_window_days"))  # every day of it must be archived
    if (as_of - dt.date.min).days < window_days:  # the window would start before year 1
        raise EcomError(f"as of {as_of} there is no whole week before it to model", "pick a later as-of date")
    window = [as_of - dt.timedelta(days=d) for d in range(window_days, 0, -1)]
    missing = [day for day in window if day not in archived]
    if missing:
        raise EcomError(
            f"{len(missing)} of the {len(window)} days before {as_of} are not archived ({missing[0]}..{missing[-1]})",
            f"run `ecom archive --from {missing[0]} --to {missing[-1]}` first",
        )


def archive_is_exactly(settings: Settings, first: dt.date, last: dt.date) -> bool:
    """Whether the warehouse holds every day of [first, last] and no other day."""
    days = set(archive_mod.days_in(first, last))
    return archived_order_days(settings) == days


def dataset(settings: Settings) -> dict[str, Any] | None:
    db = settings.tidb.database
    with tidb.connection(settings, db) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT seed, users, items, orders, days, first_day, last_day FROM `{db}`.dataset_info")
        row = cur.fetchone()
    keys = ("seed", "users", "items", "orders", "days", "first_day", "last_day")
    return dict(zip(keys, row, strict=True)) if row else None


@dataclass
class DemoReport:
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    dashboard: list[serving.Table] = field(default_factory=list)
    recommendations: list[serving.Table] = field(default_factory=list)

    def timed(self, name: str, action: Callable[[], str]) -> None:
        started = time.perf_counter()
        detail = action()
        self.steps.append((name, time.perf_counter() - started, detail))


def demo(
    settings: Settings,
    spec: generate_mod.GenerateSpec,
    stream_seconds: float,
    stream_rate: float,
    on_step: Callable[[str, float, str], None] | None = None,
    progress: Progress | None = None,
) -> DemoReport:
    """init → generate (or reuse) → archive → transform → export → live burst → dashboard + recommendations."""
    report = DemoReport()
    today = settings.today()
    yesterday = today - dt.timedelta(days=1)

    def step(name: str, action: Callable[[], str]) -> None:
        report.timed(name, action)
        if on_step is not None:
            on_step(*report.steps[-1])

    step("init", lambda: f"schema ready ({', '.join(tidb.init_schema(settings)) or 'no new migrations'})")
    wanted = {
        "seed": spec.seed,
        "users": spec.users,
        "items": spec.items,
        "orders": spec.orders,
        "days": spec.days,
        "last_day": yesterday,
    }
    have = dataset(settings)
    reuse = have is not None and all(have[k] == v for k, v in wanted.items())
    first_day = today - dt.timedelta(days=spec.days)

    def generate_step() -> str:
        if reuse:
            return f"reused the data already generated ({spec.orders} orders, seed {spec.seed})"
        result = run_generate(settings, spec, progress)
        why = "no data yet" if have is None else "the data was for another size, seed or day"
        return f"reset ({why}): {result.users} users, {result.items} items, {result.orders} orders"

    step("generate", generate_step)

    def archive_step() -> str:
        if reuse and archive_is_exactly(settings, first_day, yesterday):
            return f"reused: {first_day}..{yesterday} already archived"
        # The demo archives the whole history: start from an empty archive, so no day of another
        # dataset (say, one generated for an earlier day by another checkout) survives beside it.
        # (A reset already emptied it: run_generate forgets the archive of the data it replaces.)
        if reuse:
            archive_mod.forget(settings)
        result = run_archive(settings, first_day, yesterday, progress)
        return f"{first_day}..{yesterday}: {result.orders} orders, {result.express} expresses"

    step("archive", archive_step)

    def transform_step() -> str:
        outcome = run_transform(settings, today, quiet=True)
        return f"dbt build as of {today}: {len(outcome.results)} models and data tests passed"

    step("transform", transform_step)

    def export_step() -> str:
        result = run_export(settings)
        return ", ".join(f"{table} {rows}" for table, rows in result.rows.items())

    step("export", export_step)

    def stream_step() -> str:
        started = settings.now()
        result = stream_mod.stream(settings, stream_mod.StreamSpec(rate=stream_rate, duration=stream_seconds))
        runs.record(settings, "stream", started, f"{result.orders} live orders")
        return f"{result.orders} live orders ({result.amount:,.2f}), {result.status_moves} shipments moved on"

    step("stream", stream_step)
    report.dashboard = serving.dashboard(settings)
    for user_id in serving.sample_users(settings).values():
        report.recommendations.append(serving.recommend(settings, user_id))
    return report
