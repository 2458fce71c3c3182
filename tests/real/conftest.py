"""The real-engine contract suite's switch, targets, header and clean-up (tests/real/README.md).

Not part of `make test`: unless ECOM_REAL=1 (set by `make test-real`), nothing in tests/real is collected, and
naming a file of it explicitly stops the run with a message instead of running it by accident.

With ECOM_REAL=1 it never pretends: settings that are missing stop it with exit code 1 and a list of them (no
skip), and when it runs, it prints what it ran against (server versions, account, user, role, warehouse, sign-in
method; never a secret) before the first step and again in the summary.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.real import targets as targets_mod
from tests.real.targets import Targets

ENABLED = os.environ.get("ECOM_REAL") == "1"
HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent

if not ENABLED:
    collect_ignore_glob = ["*"]  # `pytest` / `make test`: tests/real is not collected at all


@dataclass
class Resources:
    """What this run owns, all of it dropped at the end: unique TiDB databases, a Snowflake database (or the
    stand-in's files), and a private ECOM_HOME holding the dbt profile, dbt's target and the step logs."""

    targets: Targets
    token: str
    home: Path
    tidb_database: str
    tidb_express_database: str
    snowflake_database: str | None  # None on the stand-in: its database lives in home/warehouse
    header: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)
    steps: list[Any] = field(default_factory=list)  # the CLI steps run (test_contract.Step), for the summary
    snowflake_created: bool = False
    config: pytest.Config | None = None  # for progress lines on the terminal
    started: float = field(default_factory=time.perf_counter)

    @property
    def warehouse_schema(self) -> str:
        return self.targets.snowflake.schema if self.targets.snowflake else "ANALYTICS"

    @property
    def warehouse_database(self) -> str:
        return self.snowflake_database or "ECOMMERCE"  # the local target's database (profiles.example.yml)

    def env(self) -> dict[str, str]:
        """The environment of every CLI step: the caller's, pointed at this run's databases and home."""
        drop = ("ECOM_FAILPOINT", "ECOM_HOME", "DBT_PROFILES_DIR", "ECOM_REAL", "TIDB_DATABASE", "SNOWSQL_DATABASE")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "SNOWFLAKE_DATABASE"}
        env.update(
            TIDB_HOST=self.targets.tidb.host,
            TIDB_PORT=str(self.targets.tidb.port),
            TIDB_USER=self.targets.tidb.user,
            TIDB_DATABASE=self.tidb_database,
            TIDB_EXPRESS_DATABASE=self.tidb_express_database,
            ECOM_HOME=str(self.home),
            DBT_PROFILES_DIR=str(self.home / "profiles"),
            ECOM_TARGET=self.targets.ecom_target,
            DO_NOT_TRACK="1",
        )
        if self.snowflake_database:
            env["SNOWFLAKE_DATABASE"] = self.snowflake_database
        return env


_RESOURCES = pytest.StashKey[Resources]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """tests/real (or a file of it) named on the command line without ECOM_REAL=1: stop with a message rather
    than run it by accident or report "no tests ran" (a plain `pytest` run names only `tests`)."""
    if ENABLED:
        return
    named = [Path(str(arg).split("::", 1)[0]).resolve() for arg in config.args]
    if any(path == HERE or HERE in path.parents for path in named):
        pytest.exit(
            "tests/real is the real-engine contract suite: run it with `make test-real` (it sets ECOM_REAL=1); "
            "it is never part of `make test`",
            returncode=1,
        )


def _terminal(config: pytest.Config, lines: list[str]) -> None:
    """Write to the terminal now, past pytest's output capture (the header must show before the steps run)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    context = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with context:
        for line in lines:
            reporter.write_line(line)


def say(config: pytest.Config | None, line: str) -> None:
    if config is not None:
        _terminal(config, [line])


# --- TiDB -------------------------------------------------------------------------------------------------------


def tidb_connect(targets: Targets, database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(database=database, **targets.tidb.connect_args())


def _describe_tidb(targets: Targets) -> tuple[list[str], list[str], list[str]]:
    """Header lines, problems (a stand-in not allowed) and leftover databases of earlier runs."""
    cfg = targets.tidb
    try:
        conn = tidb_connect(targets)
    except pymysql.err.MySQLError as exc:
        message = targets_mod.redact(str(exc), targets_mod.secrets(os.environ))
        return [], [f"cannot connect to TiDB at {cfg.host}:{cfg.port} as {cfg.user!r}: {message}"], []
    try:
        with conn.cursor() as cur:
            try:
                cur.execute("SELECT tidb_version()")
                version = str(cur.fetchone()[0])
                is_tidb = True
            except pymysql.err.MySQLError:
                cur.execute("SELECT VERSION()")
                version = str(cur.fetchone()[0])
                is_tidb = False
            cur.execute("SELECT CURRENT_USER()")
            current_user = cur.fetchone()[0]
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            row = cur.fetchone()
            cipher = row[1] if row and row[1] else ""
            cur.execute("SHOW DATABASES LIKE 'ecom\\_contract\\_%'")
            leftovers = sorted({r[0] for r in cur.fetchall()})
    finally:
        conn.close()
    first_line = version.splitlines()[0]
    details = [line.strip() for line in version.splitlines()[1:4]]
    kind = "TiDB" if is_tidb else "NOT TiDB, a stand-in"
    lines = [
        f"  TiDB side : {first_line} ({kind}) at {cfg.host}:{cfg.port}",
        f"              signed in as {current_user}, with a password ({'TIDB_PASSWORD' if cfg.password else 'EMPTY'})",
        *(f"              {detail}" for detail in details),
        f"              TLS: {cipher or 'none'}" + (f" (CA bundle {cfg.trust_store()})" if cipher else ""),
    ]
    problems = []
    if not is_tidb and not targets.standin_allowed:
        problems.append(
            f"TIDB_HOST={cfg.host}:{cfg.port} answers as {first_line}, not TiDB: point TIDB_* at a TiDB, or set "
            f"{targets_mod.STANDIN_SWITCH}=1 to run against a stand-in on purpose"
        )
    return lines, problems, leftovers


def drop_tidb_databases(targets: Targets, names: list[str]) -> str:
    try:
        conn = tidb_connect(targets)
    except pymysql.err.MySQLError as exc:
        return f"TiDB: could not connect to drop {', '.join(names)} ({type(exc).__name__}): drop them by hand"
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    except pymysql.err.MySQLError as exc:
        return f"TiDB: could not drop {', '.join(names)} ({exc.args[0] if exc.args else exc}): drop them by hand"
    finally:
        conn.close()
    return f"TiDB: dropped {', '.join(names)}"


# --- Snowflake ----------------------------------------------------------------------------------------------------


def snowflake_connect(targets: Targets, database: str | None = None, schema: str | None = None) -> Any:
    import snowflake.connector

    assert targets.snowflake is not None
    return snowflake.connector.connect(**targets.snowflake.connect_args(database, schema))


def _snowflake_setup(resources: Resources) -> list[str]:
    """Sign in, describe the session, and create this run's database; returns problems."""
    import snowflake.connector

    targets = resources.targets
    assert targets.snowflake is not None and resources.snowflake_database is not None
    sf = targets.snowflake
    secret_values = targets_mod.secrets(os.environ)
    resources.header += [
        f"  Snowflake : account {sf.account}, user {sf.user}, role {sf.role or '(the user default)'}, "
        f"warehouse {sf.warehouse or '(the user default)'}",
        f"              sign-in: {sf.sign_in}",
    ]
    try:
        conn = snowflake_connect(targets)
    except snowflake.connector.errors.Error as exc:
        message = targets_mod.redact(getattr(exc, "raw_msg", None) or str(exc), secret_values)
        return [f"cannot sign in to Snowflake account {sf.account!r} as {sf.user!r} with {sf.sign_in}: {message}"]
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT CURRENT_ACCOUNT(), CURRENT_REGION(), CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE(), "
            "CURRENT_VERSION()"
        )
        account, region, user, role, warehouse, version = cur.fetchone()
        cur.execute("SHOW DATABASES LIKE 'ECOM_CONTRACT_%'")
        column = [d[0] for d in cur.description].index("name")
        leftovers = sorted(str(r[column]) for r in cur.fetchall() if str(r[column]).startswith("ECOM_CONTRACT_"))
        resources.header.append(
            f"              session: Snowflake {version}, account locator {account} ({region}), user {user}, "
            f"role {role}, warehouse {warehouse or 'NONE'}"
        )
        if not warehouse:
            return ["Snowflake session has no warehouse: set SNOWFLAKE_WAREHOUSE or the user's DEFAULT_WAREHOUSE"]
        if leftovers:
            resources.notes.append(
                f"Snowflake databases left by earlier interrupted runs: {', '.join(leftovers)} "
                "(drop them once no contract run is active)"
            )
        try:
            cur.execute(
                f"CREATE TRANSIENT DATABASE {resources.snowflake_database} DATA_RETENTION_TIME_IN_DAYS = 0 "
                "COMMENT = 'ecom-htap real-engine contract suite: one run, dropped when it ends'"
            )
        except snowflake.connector.errors.Error as exc:
            message = targets_mod.redact(getattr(exc, "raw_msg", None) or str(exc), secret_values)
            return [
                f"role {role} cannot create the run's database {resources.snowflake_database} ({message}): the "
                "contract suite needs CREATE DATABASE ON ACCOUNT (docs/snowflake-setup.sql, part 6)"
            ]
        resources.snowflake_created = True
        resources.header.append(
            f"              database {resources.snowflake_database} (transient, this run's own; dropped at the "
            f"end): schema RAW (the runner) and {sf.schema} (dbt)"
        )
    finally:
        conn.close()
    return []


def drop_snowflake_database(resources: Resources) -> str:
    import snowflake.connector

    name = resources.snowflake_database
    try:
        conn = snowflake_connect(resources.targets)
    except snowflake.connector.errors.Error as exc:
        return f"Snowflake: could not sign in to drop {name} ({type(exc).__name__}): DROP DATABASE {name} by hand"
    try:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    except snowflake.connector.errors.Error as exc:
        return f"Snowflake: could not drop {name} (error {getattr(exc, 'errno', '?')}): DROP DATABASE {name} by hand"
    finally:
        conn.close()
    return f"Snowflake: dropped database {name}"


@contextlib.contextmanager
def warehouse_connection(resources: Resources) -> Iterator[Any]:
    """A connection to this run's warehouse database, RAW current: the account, or the stand-in's files (read
    in-process once no CLI step holds them)."""
    if resources.targets.snowflake is not None:
        conn = snowflake_connect(resources.targets, resources.warehouse_database, "RAW")
        try:
            yield conn
        finally:
            conn.close()
        return
    import fakesnow
    import snowflake.connector

    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fakesnow.patch(db_path=str(resources.home / "warehouse")):
            conn = snowflake.connector.connect(
                account="fakesnow", user="local", password="local", database="ECOMMERCE", schema="RAW"
            )
            try:
                yield conn
            finally:
                conn.close()


# --- the run's resources --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def resources(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resources]:
    config = request.config
    found, problems = targets_mod.resolve(os.environ)
    if found is None:
        pytest.exit(targets_mod.missing_message(problems), returncode=1)
    token = uuid.uuid4().hex[:8]
    home = tmp_path_factory.mktemp(f"contract_{token}")
    (home / "profiles").mkdir()
    # the shipped profile, as it is: the contract is that profiles.example.yml signs in as the environment says
    shutil.copy(PROJECT_ROOT / "profiles.example.yml", home / "profiles" / "profiles.yml")
    res = Resources(
        targets=found,
        token=token,
        home=home,
        tidb_database=f"ecom_contract_{token}",
        tidb_express_database=f"ecom_contract_{token}_express",
        snowflake_database=f"ECOM_CONTRACT_{token.upper()}" if found.snowflake else None,
    )
    res.config = config
    config.stash[_RESOURCES] = res
    mode = (
        f"STAND-INS ALLOWED ({found.standin_reason})" if found.standin_allowed else "REAL ENGINES (no stand-in allowed)"
    )
    res.header = [
        f"real-engine contract suite, run {token}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC: {mode}",
        "  profile   : profiles.example.yml as shipped, target " + found.ecom_target,
    ]
    ran = False
    try:
        lines, problems, leftovers = _describe_tidb(found)
        res.header += lines
        res.header.append(
            f"              databases {res.tidb_database}, {res.tidb_express_database} (this run's own; dropped "
            "at the end)"
        )
        if leftovers:
            res.notes.append(
                f"TiDB databases left by earlier interrupted runs: {', '.join(leftovers)} "
                "(drop them once no contract run is active)"
            )
        if not problems:
            if found.snowflake is not None:
                problems = _snowflake_setup(res)
            else:
                res.header += [
                    "  Snowflake : fakesnow stand-in (Snowflake emulated on DuckDB, in-process): NOT a Snowflake "
                    "account",
                    f"              its database: files under {home / 'warehouse'} (removed at the end)",
                ]
        res.header.append(f"  home      : {home} (dbt target and logs, step logs)")
        _terminal(config, ["", *res.header, *(f"  note      : {n}" for n in res.notes)])
        if problems:
            pytest.exit(targets_mod.failed_message(problems), returncode=1)
        ran = True
        yield res
    finally:
        if ran:  # `ecom init` creates them; dropped whatever happened after
            res.cleanup.append(drop_tidb_databases(found, [res.tidb_database, res.tidb_express_database]))
        if res.snowflake_created:
            res.cleanup.append(drop_snowflake_database(res))
        if found.snowflake is None:
            shutil.rmtree(home / "warehouse", ignore_errors=True)
            res.cleanup.append(f"stand-in: removed {home / 'warehouse'}")
        say(config, "  clean-up  : " + ("; ".join(res.cleanup) or "nothing was created"))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    res = config.stash.get(_RESOURCES, None)
    if res is None:
        return
    terminalreporter.section("real-engine contract suite: what it ran against")
    for line in res.header:
        terminalreporter.write_line(line)
    for note in res.notes:
        terminalreporter.write_line(f"  note      : {note}")
    if res.steps:
        terminalreporter.write_line("  steps     :")
        for step in res.steps:
            terminalreporter.write_line(f"    {step.summary()}")
    terminalreporter.write_line(f"  clean-up  : {'; '.join(res.cleanup) or 'nothing was created'}")
    terminalreporter.write_line(f"  runtime   : {time.perf_counter() - res.started:.1f} s in all")
