"""The marts' release: which marts `ecom export` may publish.

One row in the warehouse, next to the marts (`<schema>.MART_RELEASE`): the as-of date the marts were last
built for, the dbt invocation that built them, when it started and, once `ecom transform` saw that build
pass every model and data test, 'passed' and when (UTC). Every dbt command that can rebuild a table marks
the row 'building' first (the project's on-run-start hook, dbt_project/macros/mart_release.sql), so a
transform killed or failed half-way, or marts rebuilt by a plain `ecom dbt run` without their tests, leave
nothing releasable. Only the runner marks a build 'passed', and only the build that marked the row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from runner import warehouse
from runner.config import Settings, WarehouseConfig
from runner.errors import EcomError

TABLE = "MART_RELEASE"
BUILDING, PASSED = "building", "passed"
OVERLAPPING = "overlapping"  # more than one dbt command marked the row at once: nothing is known to have passed
RETRY = "run `ecom transform` until it passes, then `ecom export`"


@dataclass(frozen=True)
class Release:
    as_of_date: dt.date
    state: str  # BUILDING, PASSED or OVERLAPPING
    invocation_id: str
    started_at: dt.datetime  # UTC
    finished_at: dt.datetime | None  # UTC; set when passed

    @property
    def passed(self) -> bool:
        return self.state == PASSED and self.finished_at is not None

    def describe(self) -> str:
        """One phrase for status and messages, e.g. "as of 2026-11-30, passed at 2026-12-01 06:00:03 UTC"."""
        if self.passed:
            return f"as of {self.as_of_date}, passed at {utc_text(self.finished_at)}"
        if self.state == OVERLAPPING:
            started = utc_text(self.started_at)
            return f"as of {self.as_of_date}, built by several dbt commands at once (the latest at {started})"
        return f"as of {self.as_of_date}, unfinished or failed (build started at {utc_text(self.started_at)})"


def utc_text(moment: dt.datetime | None) -> str:
    """A UTC time as the messages show it."""
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else "an unknown time"


def table(cfg: WarehouseConfig) -> str:
    return f"{cfg.database}.{cfg.schema}.{TABLE}"


def read(conn: Any, cfg: WarehouseConfig) -> Release | None:
    """The release as the warehouse holds it now; None when no dbt command has built the marts since the
    record exists (or one was killed between replacing the row and writing it)."""
    if not warehouse.table_exists(conn, cfg, cfg.schema, TABLE):
        return None
    cur = conn.cursor()
    cur.execute(
        f"SELECT as_of_date, state, invocation_id, started_at, finished_at FROM {table(cfg)} "
        "ORDER BY started_at DESC, invocation_id"
    )
    rows = list(cur.fetchall())
    warehouse.forget_result(conn, cur)
    if not rows:
        return None
    newest = Release(*rows[0])
    if len(rows) > 1:  # two hooks interleaved their delete and insert: neither build is known to be the marts'
        return Release(newest.as_of_date, OVERLAPPING, newest.invocation_id, newest.started_at, None)
    return newest


def current(settings: Settings) -> Release | None:
    """The release, on a warehouse connection of its own (for `ecom status`)."""
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            return read(conn, cfg)
        finally:
            conn.close()


def mark_passed(settings: Settings, invocation_id: str) -> Release:
    """Release the marts of the dbt build `invocation_id`, which passed every model and data test. Refused
    when that build is no longer the one the record names (another dbt command started since)."""
    with warehouse.session(settings) as cfg:
        conn = warehouse.connect(cfg)
        try:
            if warehouse.table_exists(conn, cfg, cfg.schema, TABLE):  # else: the hook never ran (see below)
                conn.cursor().execute(
                    f"UPDATE {table(cfg)} SET state = %s, finished_at = SYSDATE() "
                    "WHERE invocation_id = %s AND state = %s",
                    (PASSED, invocation_id, BUILDING),
                )
            found = read(conn, cfg)
        finally:
            conn.close()
    if found is None or found.invocation_id != invocation_id or not found.passed:
        raise EcomError(
            "dbt build passed, but the marts' release record does not name it, so they are not released (another "
            "dbt command started meanwhile, or dbt_project.yml lost its on-run-start hook mark_marts_building)",
            "let the other command finish (or put the hook back), then " + RETRY,
        )
    return found


def require_passed(release: Release | None, marts_as_of: dt.date | None) -> Release:
    """The release, if it lets the marts (of `marts_as_of`; None: they are empty) be exported."""
    if release is None:
        raise EcomError("no transform has passed on these marts yet (no release record)", RETRY)
    if not release.passed:
        raise EcomError(
            f"the marts as of {release.as_of_date} did not pass their tests, so they are not released (their build "
            f"started at {utc_text(release.started_at)} was killed or failed, or was a plain `ecom dbt` command)",
            RETRY,
        )
    if marts_as_of is not None and marts_as_of != release.as_of_date:
        raise EcomError(
            f"the marts are as of {marts_as_of}, but the transform that passed was as of {release.as_of_date} "
            "(the marts were changed outside dbt)",
            RETRY,
        )
    return release


def require_unchanged(conn: Any, cfg: WarehouseConfig, released: Release) -> None:
    """Refuse if the release changed since `released` was read: a dbt command started meanwhile, so the
    rows read since may be of marts it was rebuilding."""
    now = read(conn, cfg)
    if now != released:
        detail = now.describe() if now is not None else "the release record was removed"
        raise EcomError(
            f"the marts changed while they were exported (now {detail}); nothing was swapped",
            f"{RETRY} again",
        )
