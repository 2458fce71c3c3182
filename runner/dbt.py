"""dbt, run in-process (dbt's programmatic runner), on the target the settings name."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from runner import failpoints, release, warehouse
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


def project_var(name: str) -> Any:
    """A var of dbt_project.yml: the rules the runner shares with the models (the hot-items window) live there."""
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text(encoding="utf-8"))
    return project["vars"][name]


def dbt_args(settings: Settings, args: list[str], as_of: dt.date | None = None) -> list[str]:
    """Project, profile, target and per-home paths, so test runs and the demo never share dbt state.

    Only after a dbt command: dbt's own options before one (`--version`, `--help`) take none of those."""
    if not args or args[0].startswith("-"):
        return list(args)
    full = [*args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(settings.profiles_dir)]
    if args[0] not in ("debug", "deps"):  # the two commands without a --target-path option
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


@dataclass(frozen=True)
class _WithoutInterruptTrace:
    """A dbt logger's filter, less the two events of dbt's report of a Ctrl-C: "Encountered an error:" with
    no message, and the interrupt's stack trace (some 40 lines). The CLI says `interrupted` instead."""

    keep: Callable[[Any], bool]

    def __call__(self, msg: Any) -> bool:
        # dbt fires both while it handles the exception: the one being handled tells a Ctrl-C
        reports_interrupt = msg.info.name in ("MainEncounteredError", "MainStackTrace") and isinstance(
            sys.exc_info()[1], KeyboardInterrupt
        )
        return not reports_interrupt and bool(self.keep(msg))


def _hide_interrupt_trace(_msg: Any) -> None:
    """A dbt callback: dbt makes its loggers afresh for each invocation, each gets the filter at its first
    event (callbacks run after the loggers, so that event is logged as it was)."""
    from dbt_common.events.event_manager_client import get_event_manager

    for logger in getattr(get_event_manager(), "loggers", []):
        if not isinstance(logger.filter, _WithoutInterruptTrace):
            logger.filter = _WithoutInterruptTrace(logger.filter)


@contextlib.contextmanager
def _cancellable(standin: bool) -> Iterator[None]:
    """On Ctrl-C dbt cancels the running queries by their Snowflake session id, which the stand-in's
    connections lack (dbt then dies of their AttributeError): theirs run in-process, in duckdb, which
    interrupts them itself."""
    if not standin:
        yield
        return
    from dbt.adapters.snowflake.connections import SnowflakeConnectionManager

    def interrupt_duckdb(_manager: Any, connection: Any) -> None:
        duck = getattr(connection.handle, "_duck_conn", None)
        if duck is not None:
            duck.interrupt()

    cancel = SnowflakeConnectionManager.cancel
    SnowflakeConnectionManager.cancel = interrupt_duckdb  # type: ignore[method-assign]
    try:
        yield
    finally:
        SnowflakeConnectionManager.cancel = cancel  # type: ignore[method-assign]


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
    with warehouse.session(settings) as cfg, _cancellable(cfg.is_standin):
        result = dbtRunner(callbacks=[_hide_interrupt_trace, *callbacks]).invoke(full)
    if isinstance(result.exception, KeyboardInterrupt):  # dbt hands Ctrl-C back as a result: raised again
        raise result.exception
    if result.exception is not None:
        message = redact(str(result.exception), cfg.secrets)
        if type(result.exception).__name__ == "DbtUsageException":  # dbt refused the command line itself
            raise EcomError(
                f"dbt {' '.join(args)} failed: {message}",
                "check it against dbt's own help: `ecom dbt -- --help`, `ecom dbt -- <command> --help`",
            )
        raise EcomError(f"dbt {args[0] if args else ''} failed: {message}", "see the dbt log above")
    nodes: list[tuple[str, str]] = []
    for node_result in getattr(result.result, "results", None) or []:
        nodes.append((node_result.node.unique_id, str(node_result.status)))
    return DbtOutcome(success=bool(result.success), command=full, results=nodes)


class _CrashPoints:
    """Crash tests: `transform.after_model.<model>` dies once that model is built (dbt's NodeFinished);
    `transform.during_tests` at the first data test finished once every mart is built (models/marts: the
    marts all new, some of their tests not run yet)."""

    def __init__(self) -> None:
        self.marts = {path.stem for path in (DBT_PROJECT_DIR / "models" / "marts").glob("*.sql")}
        self.built: set[str] = set()

    def __call__(self, msg: Any) -> None:
        if msg.info.name != "NodeFinished":
            return
        node = msg.data.node_info
        if node.resource_type == "model":
            self.built.add(node.node_name)
            failpoints.hit(f"transform.after_model.{node.node_name}")
        elif node.resource_type == "test" and self.marts <= self.built:
            failpoints.hit("transform.during_tests")


class _Invocation:
    """The id of the dbt invocation whose events it receives (dbt resets it as each invocation starts)."""

    def __init__(self) -> None:
        self.id = ""

    def __call__(self, msg: Any) -> None:
        self.id = msg.info.invocation_id


def check_freshness(settings: Settings, quiet: bool = False) -> DbtOutcome:
    """`dbt source freshness` on RAW: a stale source past `warn_after` is a warning line, past `error_after`
    (or a source dbt cannot read) stops the transform before anything is built."""
    outcome = run(settings, ["source", "freshness"], quiet=quiet)
    # only the sources: dbt lists the project's on-run-start hook among the results too (it changes nothing here)
    sources = [(node, status) for node, status in outcome.results if node.startswith("source.")]
    stale = {node.removeprefix("source.ecommerce."): status for node, status in sources if status != "pass"}
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
    """`dbt source freshness`, then `dbt build`: every model and data test, for one as-of date; a build that
    passed them all releases its marts for export (runner/release.py)."""
    check_freshness(settings, quiet=quiet)
    invocation = _Invocation()
    # the failpoint callback sees every dbt event: registered only when a crash test arms failpoints
    callbacks: list[Callable[[Any], None]] = [invocation, _CrashPoints()] if failpoints.armed() else [invocation]
    # unit tests check the models' logic, not the data: they run in CI (`make test`), not in every daily
    # build, as dbt recommends for production (they cost about 6 s of each build here).
    # The build's on-run-start hook marks the marts 'building' before any model: a kill or a failure from
    # here on leaves them unreleased.
    outcome = run(settings, ["build", "--exclude-resource-type", "unit_test"], as_of, quiet=quiet, callbacks=callbacks)
    if not outcome.success:
        failed = ", ".join(outcome.failures[:5]) or "see the dbt log above"
        raise EcomError(
            f"dbt build failed ({failed}); the marts are not released for export",
            "fix the failing models or tests, then rerun `ecom transform`",
        )
    release.mark_passed(settings, invocation.id)
    failpoints.hit("transform.before_run_log")  # the marts are built, tested and released; the run is not logged yet
    return outcome
