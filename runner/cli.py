"""`ecom`: a thin click layer over the runner and loaders (each command calls one library function)."""

from __future__ import annotations

import datetime as dt
import functools
import io
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click
import pymysql
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from loaders.archive import EARLIEST_DAY, check_range, parse_day
from loaders.generate import GenerateSpec
from loaders.stream import StreamSpec, stream
from loaders.verify import verify_tables
from runner import dbt, interrupt, pipeline, release, serving, tidb, warehouse
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError, env_secrets, redact
from runner.output import console, dump_json, errors, reader_gone, show, visible

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


def _settings() -> Settings:
    return Settings.from_env()


class _Bars:
    """A rich progress bar per table, fed by the loaders' (table, done, total) callbacks. `shown=False`
    (--json) never starts the display: stdout then holds nothing but the JSON."""

    def __init__(self, shown: bool = True) -> None:
        self.shown = shown
        self.progress = Progress(
            TextColumn("{task.description:>10}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> Callable[[str, int, int], None]:
        if self.shown:
            self.progress.__enter__()
        return self.update

    def __exit__(self, *exc: object) -> None:
        if self.shown:
            self.progress.__exit__(None, None, None)

    def update(self, table: str, done: int, total: int) -> None:
        if table not in self.tasks:
            self.tasks[table] = self.progress.add_task(table, total=total or None)
        self.progress.update(self.tasks[table], completed=done, total=total or None)


def spec_options(command: Callable[..., None]) -> Callable[..., None]:
    """The sizes of generated history, shared by `generate` and `demo`; the command gets a validated spec."""

    @functools.wraps(command)
    def with_spec(users: int, items: int, orders: int, days: int, seed: int, **rest: Any) -> None:
        spec = GenerateSpec(users=users, items=items, orders=orders, days=days, seed=seed)
        spec.validate()
        command(spec=spec, **rest)

    for name, help_text in reversed(
        [("users", ""), ("items", ""), ("orders", ""), ("days", "Days of history before today."), ("seed", "")]
    ):
        with_spec = click.option(
            f"--{name}", default=getattr(GenerateSpec, name), show_default=True, type=int, help=help_text or None
        )(with_spec)
    return with_spec


def _day_range(date: str | None, first: str | None, last: str | None, settings: Settings) -> tuple[dt.date, dt.date]:
    if date is not None and (first is not None or last is not None):
        raise EcomError("--date cannot be combined with --from/--to", "use one or the other")
    if date is not None:  # not a truth test: `--date ""` is a bad date, not "yesterday"
        day = parse_day(date, "--date")
        return day, day
    if first is not None or last is not None:
        if first is None or last is None:
            raise EcomError("--from and --to go together", "give both, e.g. --from 2026-01-01 --to 2026-01-31")
        return parse_day(first, "--from"), parse_day(last, "--to")
    yesterday = settings.today() - dt.timedelta(days=1)
    return yesterday, yesterday


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """E-commerce analytics: live data in TiDB, history modelled in Snowflake with dbt, served back from TiDB.

    Configuration comes from the environment (TIDB_*, ECOM_*) and the dbt profile (profiles.yml).
    """


@cli.command()
def init() -> None:
    """Create (or upgrade) the TiDB schema: business tables, serving tables and views."""
    settings = _settings()
    ran = tidb.init_schema(settings)
    console.print(
        f"schema of {settings.tidb.database}/{settings.tidb.express_database}: "
        + (f"applied {', '.join(ran)}" if ran else "up to date")
    )


@cli.command()
@spec_options
def generate(spec: GenerateSpec) -> None:
    """Replace the business data with a generated history (deterministic for a seed)."""
    settings = _settings()
    with _Bars() as bars:
        result = pipeline.run_generate(settings, spec, bars)
    console.print(
        f"generated {result.users} users, {result.items} items, {result.orders} orders with expresses "
        f"over {result.first_day}..{result.last_day} (amount {result.amount:,.2f})"
    )


@cli.command("stream")
@click.option("--rate", default=5.0, show_default=True, type=float, help="Orders per second.")
@click.option("--duration", default=None, type=float, help="Seconds to run (default: until Ctrl-C).")
@click.option("--seed", default=None, type=int)
def stream_command(rate: float, duration: float | None, seed: int | None) -> None:
    """Write live orders for today, and move shipments forward, until --duration or Ctrl-C."""
    settings = _settings()
    started = settings.now()

    def tick(result: Any) -> None:
        if console.is_terminal:  # one line rewritten in place (rich drops a "\r" in printed text)
            console.file.write(f"\r{result.orders} orders, {result.amount:,.2f} in {result.seconds:.0f}s\x1b[K")
            console.file.flush()

    result = stream(settings, StreamSpec(rate=rate, duration=duration, seed=seed), on_tick=tick)
    if console.is_terminal:
        console.file.write("\n")
    pipeline.runs.record(settings, "stream", started, f"{result.orders} live orders")
    console.print(
        f"streamed {result.orders} orders ({result.amount:,.2f}) in {result.seconds:.1f}s; "
        f"{result.status_moves} shipments moved on"
    )


@cli.command()
@click.option("--date", "date", default=None, help="One business day, YYYY-MM-DD (default: yesterday).")
@click.option("--from", "first", default=None, help="First day of a range, YYYY-MM-DD.")
@click.option("--to", "last", default=None, help="Last day of a range (included).")
@click.option(
    "--recheck-days",
    default=0,
    show_default=True,
    type=click.IntRange(0, 3660),
    help="Also verify the N days before, and archive again those that changed (late rows, moved shipments).",
)
@click.option(
    "--purge-older-than",
    "purge_days",
    default=None,
    type=click.IntRange(1, 36500),
    help="Then delete from TiDB the days older than N days that the warehouse is proven to hold (off by default).",
)
@click.option(
    "--allow-removal",
    is_flag=True,
    help="Replace archived days even where TiDB no longer holds some of their archived rows (refused by default).",
)
@json_option
def archive(
    date: str | None,
    first: str | None,
    last: str | None,
    recheck_days: int,
    purge_days: int | None,
    allow_removal: bool,
    as_json: bool,
) -> None:
    """Copy whole days of orders and expresses (and users/items snapshots) into the warehouse."""
    settings = _settings()
    day_first, day_last = _day_range(date, first, last, settings)
    check_range(settings, day_first, day_last)  # before the recheck archives anything: a refused range writes nothing
    if recheck_days > (day_first - EARLIEST_DAY).days:
        raise EcomError(f"--recheck-days {recheck_days} reaches back before {EARLIEST_DAY}", "recheck fewer days")
    with _Bars(shown=not as_json) as bars:
        progress = None if as_json else bars
        restored = pipeline.run_recheck(settings, day_first, recheck_days, progress, allow_removal=allow_removal)
        result = pipeline.run_archive(settings, day_first, day_last, progress, allow_removal=allow_removal)
        purged = pipeline.run_purge(settings, purge_days, progress) if purge_days is not None else None
    summary = {
        "first_day": result.first_day,
        "last_day": result.last_day,
        "orders": result.orders,
        "express": result.express,
        "users": result.users,
        "items": result.items,
        "amount": result.amount,
        "rearchived_days": restored,
        "purged_days": purged.purged if purged else [],
        "purge_kept_days": purged.kept if purged else [],
    }
    if as_json:
        dump_json(summary)
        return
    console.print(
        f"archived {day_first}..{day_last}: {result.orders} orders, {result.express} expresses "
        f"(amount {result.amount:,.2f}); snapshots of {result.users} users and {result.items} items"
    )
    if recheck_days:
        days = ", ".join(str(d) for d in restored) or "none"
        console.print(f"rechecked the {recheck_days} days before {day_first}: archived again {days}")
    if purged is not None:
        console.print(
            f"purged {len(purged.purged)} days before {purged.cutoff} from TiDB ({purged.orders} orders, "
            f"{purged.express} expresses), each proven in the warehouse"
            + (f"; kept {len(purged.kept)} unproven days (see `ecom verify`)" if purged.kept else "")
        )


@cli.command()
@click.option("--from", "first", default=None, help="First day, YYYY-MM-DD (default: the first day archived).")
@click.option("--to", "last", default=None, help="Last day, included (default: the last day archived).")
@json_option
def verify(first: str | None, last: str | None, as_json: bool) -> None:
    """Compare TiDB and the warehouse per day and table: rows, amounts, checksums (exit 1 on a difference)."""
    settings = _settings()
    explicit = first is not None or last is not None
    day_first, day_last = _day_range(None, first, last, settings) if explicit else (None, None)
    report = pipeline.run_verify(settings, day_first, day_last)
    show(verify_tables(report), as_json)
    if not report.ok:
        bad = [c for c in report.checks if not c.ok]
        days = report.days(*{c.state for c in bad})
        raise EcomError(f"{len(bad)} of {len(report.checks)} checks differ ({days[0]}..{days[-1]})", report.advice())


def _as_of(value: str | None, settings: Settings) -> dt.date:
    if value is None:
        return settings.today()
    day = parse_day(value, "--as-of")
    if day > settings.today():
        raise EcomError(f"--as-of {day} is in the future", "use today or an earlier day")
    return day


@cli.command()
@click.option("--as-of", "as_of", default=None, help="The as-of date, YYYY-MM-DD (default: today).")
def transform(as_of: str | None) -> None:
    """Build and test the dbt project (dbt build, in-process) for an as-of date."""
    settings = _settings()
    day = _as_of(as_of, settings)
    outcome = pipeline.run_transform(settings, day)
    console.print(f"dbt build as of {day}: {len(outcome.results)} nodes passed; the marts are released for export")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dbt_command(args: tuple[str, ...]) -> None:
    """Pass any dbt command through, in-process, on the configured target (e.g. `ecom dbt docs generate`).

    dbt's own help: `ecom dbt -- --help`, `ecom dbt -- <command> --help`."""
    if not args:
        raise EcomError(
            "`ecom dbt` runs a dbt command and was given none",
            "name one, e.g. `ecom dbt docs generate` or `ecom dbt ls` (dbt's commands: `ecom dbt -- --help`)",
        )
    settings = _settings()
    outcome = dbt.run(settings, list(args))
    if not outcome.success:
        raise EcomError(f"dbt {' '.join(args)} failed", "see the dbt output above")


cli.add_command(dbt_command, "dbt")


@cli.command()
def export() -> None:
    """Write user labels, hot items and monthly bills into TiDB's serving tables (swapped in atomically)."""
    settings = _settings()
    result = pipeline.run_export(settings)
    console.print(
        f"exported the marts as of {result.as_of_date}, released by the transform that passed at "
        f"{release.utc_text(result.released_at)}: "
        + ", ".join(f"{table} {rows} rows" for table, rows in result.rows.items())
        + (f"; left out the labels of {result.unknown_users} users no longer in TiDB" if result.unknown_users else "")
    )


@cli.command()
@json_option
def dashboard(as_json: bool) -> None:
    """Today's sales (total, orders, customers; by item type; by hour) and both hot-item tiers."""
    show(serving.dashboard(_settings()), as_json)


@cli.command()
@click.argument("user_id", type=int)
@json_option
def recommend(user_id: int, as_json: bool) -> None:
    """The hot items recommended to a user: the high tier for high-net-worth users, else the low tier."""
    show(serving.recommend(_settings(), user_id), as_json)


@cli.command()
@click.argument("user_id", type=int)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
def orders(user_id: int, limit: int, as_json: bool) -> None:
    """A user's orders with their live express status, newest first."""
    show(serving.orders(_settings(), user_id, limit), as_json)


@cli.command()
@click.argument("user_id", type=int)
@click.option("--month", default=None, help="YYYY-MM (default: every month).")
@json_option
def bill(user_id: int, month: str | None, as_json: bool) -> None:
    """A user's monthly bills."""
    show(serving.bill(_settings(), user_id, month), as_json)


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Connections, rows per table on both sides, and the last run of each step (exit 1: a side is down)."""
    from runner.status import status_tables

    tables = status_tables(_settings())
    show(tables, as_json)
    if any(row[2].startswith(("unreachable", "unavailable")) for row in tables[0].rows):
        raise click.exceptions.Exit(1)  # for health checks: a side that cannot be reached is a failure


@cli.command()
@spec_options
@click.option("--stream-seconds", default=5.0, show_default=True, type=float)
@click.option("--stream-rate", default=20.0, show_default=True, type=float)
def demo(spec: GenerateSpec, stream_seconds: float, stream_rate: float) -> None:
    """The whole pipeline: init, generate, archive, transform, export, a live burst, dashboard, recommendations."""
    settings = _settings()
    StreamSpec(rate=stream_rate, duration=stream_seconds).validate()

    def announce(name: str, seconds: float, detail: str) -> None:
        console.print(Text.assemble((f"{name:>9}", "bold"), f" {seconds:6.1f}s  {visible(detail)}"))

    with _Bars() as bars:
        report = pipeline.demo(settings, spec, stream_seconds, stream_rate, on_step=announce, progress=bars)
    show(report.dashboard)
    show(report.recommendations)
    show(
        serving.Table(
            "Demo steps",
            ["step", "seconds", "what happened"],
            [(name, round(seconds, 1), detail) for name, seconds, detail in report.steps],
        )
    )


def _clean(message: str) -> str:
    """An error message as one line without secrets that shows what it says: a driver may echo a hostile
    value's newlines (made spaces) or terminal escapes (made visible, as in a table's cells)."""
    return visible(" ".join(redact(message, env_secrets()).split()))


class _OneLine(logging.Formatter):
    """A warning as one line that shows what it says (it may quote a server's message, which may quote data)."""

    def format(self, record: logging.LogRecord) -> str:
        return _clean(super().format(record))


def _log_warnings_to_stderr() -> None:
    """The library's warnings (a retried step, say) reach the user as `warning: …` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine("warning: %(message)s"))
    log = logging.getLogger("ecom")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False


def main() -> None:
    """Run the CLI: a user-fixable failure is one line on stderr and exit code 1, never a traceback; Ctrl-C
    (or SIGTERM) is `interrupted` and exit 130 (143), whatever it interrupted (runner.interrupt)."""
    _log_warnings_to_stderr()
    interrupt.install()
    try:
        code = _invoke(sys.argv[1:])
        sys.stdout.flush()
    except SystemExit:
        raise
    except BaseException as exc:
        code = _failure(exc)
    interrupt.settle(code)
    sys.exit(code)  # out of the handler: what the failure held (a loader's producer thread) is let go first


def _prog_name() -> str:
    """What the user typed, for usage lines: `ecom`, or `python -m runner`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "ecom"
    return "python -m runner" if name == "__main__.py" else name


def _invoke(args: list[str]) -> int:
    """click's main without its own Ctrl-C handling (a blank line on stderr) and its exit 1 on a closed pipe:
    `_failure` handles both."""
    try:
        with cli.make_context(_prog_name(), args) as ctx:
            code = cli.invoke(ctx)
    except click.exceptions.Exit as exc:  # --help; `status` telling a health check that a side is down
        return exc.exit_code
    return code if isinstance(code, int) else 0


def _failure(exc: BaseException) -> int:
    """What stopped the command, as one line on stderr; returns the exit code."""
    if interrupt.requested() or isinstance(exc, KeyboardInterrupt):
        return interrupt.report()  # whatever the interrupt turned into on its way up: a lost connection, say
    if isinstance(exc, BrokenPipeError) and reader_gone(sys.stdout):
        return 0  # the reader (`| head`) had all it wanted: not an error
    if isinstance(exc, click.ClickException):
        shown = io.StringIO()  # click's usage lines and message, with an argument's escapes made visible
        exc.show(file=shown)
        sys.stderr.write("".join(visible(line) + "\n" for line in shown.getvalue().splitlines()))
        return exc.exit_code
    if isinstance(exc, click.exceptions.Abort):
        errors.print("aborted")
        return 130
    if not isinstance(exc, Exception):
        raise exc
    if isinstance(exc, EcomError):
        line = _clean(str(exc))
    elif isinstance(exc, pymysql.err.MySQLError):
        line = _tidb_failure(exc)
    elif (known := warehouse.explain(exc)) is not None:
        line = _clean(str(known))
    elif os.environ.get("ECOM_DEBUG"):
        raise exc
    else:
        line = (
            f"unexpected {type(exc).__name__}: {_clean(str(exc))} "
            "— rerun with ECOM_DEBUG=1 for a traceback and report it"
        )
    errors.print(f"error: {line}")
    return 1


def _tidb_failure(exc: pymysql.err.MySQLError) -> str:
    """A driver error that reached the top: a dropped connection says so (pymysql's own text for a socket
    closed under it is just "(0, '')"), anything else quotes the server."""
    code = exc.args[0] if exc.args else 0
    if isinstance(exc, pymysql.err.InterfaceError) or code in (2006, 2013):
        try:
            cfg = TiDBConfig.from_env()
            where = f" at {cfg.host}:{cfg.port}"
        except Exception:  # the settings were read once already; no address is better than a second error
            where = ""
        detail = exc.args[1] if len(exc.args) > 1 and exc.args[1] else ""
        because = f" ({_clean(str(detail))})" if detail else ""
        return f"lost the connection to TiDB{where}{because} — check the server (and the network to it), then rerun"
    return f"TiDB said: {_clean(str(exc))} — check the server and rerun"
