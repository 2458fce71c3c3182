"""dbt, run in-process (dbt's programmatic runner), on the target the settings name."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runner import failpoints, warehouse
from runner.config import DBT_PROJECT_DIR, Settings
from runner.errors import EcomError, redact

log = logging.getLogger("ecom")


@dataclass(frozen=True)
class DbtOutcome:
    success: bool
    command: list[str]
    results: list[tuple[str, str]]  # (node, status)

    @property
    def failures(self) -> list[str]:
        return [node for node, status in self.results if status in ("error", "fail", "runtime error")]


def dbt_args(settings: Settings, args: list[str], as_of: dt.date | None = None) -> list[str]:
    """Project, profile, target and per-home paths, so test runs and the demo never share dbt state."""
    full = [*args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(settings.profiles_dir)]
    if not args or args[0] not in ("debug", "deps"):  # the two commands without a --target-path option
        full += ["--target-path", str(settings.home / "dbt" / "target")]
    full += ["--log-path", str(settings.home / "dbt" / "logs")]
    if settings.target:
        full += ["--target", settings.target]
    if "--vars" not in args:  # a passthrough that brings its own vars keeps them
        variables = {"business_time_zone": settings.timezone}
        if as_of is not None:
            variables["as_of_date"] = as_of.isoformat()
        full += ["--vars", json.dumps(variables)]
    return full


def run(
    settings: Settings,
    args: list[str],
    as_of: dt.date | None = None,
    quiet: bool = False,
    callbacks: Sequence[Callable[[Any], None]] = (),
) -> DbtOutcome:
    """Invoke dbt in-process; the warehouse session (and the stand-in patch) is held for the call.

    `callbacks` receive every dbt event (an EventMsg), as dbtRunner(callbacks=...) gives them.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from dbt.cli.main import dbtRunner

    full = dbt_args(settings, args, as_of)
    if quiet:
        full = ["--quiet", *full]
    with warehouse.session(settings) as cfg:
        result = dbtRunner(callbacks=list(callbacks)).invoke(full)
    if result.exception is not None:
        raise EcomError(
            f"dbt {args[0] if args else ''} failed: {redact(str(result.exception), cfg.secrets)}",
            "see the dbt log above",
        )
    nodes: list[tuple[str, str]] = []
    for node_result in getattr(result.result, "results", None) or []:
        nodes.append((node_result.node.unique_id, str(node_result.status)))
    return DbtOutcome(success=bool(result.success), command=full, results=nodes)


def _crash_after_model(msg: Any) -> None:
    """Crash tests: `transform.after_model.<model>` dies once that model is built (dbt's NodeFinished)."""
    if msg.info.name == "NodeFinished" and msg.data.node_info.resource_type == "model":
        failpoints.hit(f"transform.after_model.{msg.data.node_info.node_name}")


def check_freshness(settings: Settings, quiet: bool = False) -> DbtOutcome:
    """`dbt source freshness` on RAW: a stale source past `warn_after` is a warning line, past `error_after`
    (or a source dbt cannot read) stops the transform before anything is built."""
    outcome = run(settings, ["source", "freshness"], quiet=quiet)
    stale = {node.removeprefix("source.ecommerce."): status for node, status in outcome.results if status != "pass"}
    unread = [source for source, status in stale.items() if status not in ("warn", "error")]
    if unread or (not outcome.success and not stale):
        raise EcomError(
            f"dbt could not check the freshness of the warehouse archive ({', '.join(unread) or 'no result'})",
            "check that RAW exists and the role may read it (docs/snowflake-setup.sql), then rerun",
        )
    too_old = [source for source, status in stale.items() if status == "error"]
    if too_old:
        raise EcomError(
            f"the warehouse archive is older than its freshness limit allows ({', '.join(too_old)})",
            "run `ecom archive` (yesterday, or the missing days) before `ecom transform`",
        )
    if stale:
        log.warning(
            "the warehouse archive is stale (%s older than warn_after in "
            "dbt_project/models/staging/raw/_raw__sources.yml); run `ecom archive` to bring it up to date",
            ", ".join(stale),
        )
    return outcome


def transform(settings: Settings, as_of: dt.date, quiet: bool = False) -> DbtOutcome:
    """`dbt source freshness`, then `dbt build`: every model and data test, for one as-of date."""
    check_freshness(settings, quiet=quiet)
    # the failpoint callback sees every dbt event: registered only when a crash test arms failpoints
    callbacks = [_crash_after_model] if failpoints.armed() else []
    # unit tests check the models' logic, not the data: they run in CI (`make test`), not in every daily
    # build, as dbt recommends for production (they cost about 6 s of each build here)
    outcome = run(settings, ["build", "--exclude-resource-type", "unit_test"], as_of, quiet=quiet, callbacks=callbacks)
    if not outcome.success:
        failed = ", ".join(outcome.failures[:5]) or "see the dbt log above"
        raise EcomError(f"dbt build failed ({failed})", "fix the failing models or tests, then rerun `ecom transform`")
    failpoints.hit("transform.before_run_log")  # the marts are built and tested; the run is not logged yet
    return outcome
