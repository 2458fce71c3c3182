"""Dialect gate: the SQL the pipeline sends must be valid for the real engines, not only for the stand-ins.

fakesnow (DuckDB underneath) accepts looser SQL than Snowflake, and MariaDB accepts SQL that TiDB may not.
So a small pipeline runs in-process with the two drivers' cursors instrumented (the statements still run),
and every statement is parsed by sqlglot with errors raised: the warehouse side as Snowflake, the TiDB side
as MySQL (sqlglot has no TiDB dialect). The TiDB-only DDL of runner/sql (rendered for a TiDB with TiFlash)
and every dbt model and data test compiled for the `snowflake` target are parsed the same way.

A statement sqlglot keeps only as an opaque `Command` (its fallback for syntax it does not know) was not
checked: it fails like a parse error unless the allowlist below names it. The allowlist holds only SQL that
is valid on the real engine and that sqlglot cannot parse, each entry with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dbt
import pymysql.cursors
import pytest
import sqlglot
import yaml
from sqlglot import exp

from loaders.generate import GenerateSpec
from loaders.stream import StreamSpec, stream
from runner import pipeline, serving, status, tidb, tiflash
from runner.config import DBT_PROJECT_DIR, PROJECT_ROOT, Settings, TiDBConfig
from tests.conftest import drop_databases, make_settings

pytestmark = pytest.mark.e2e

SPEC = GenerateSpec(users=200, items=40, orders=1_500, days=12, seed=3)
DIALECT = {"snowflake": "snowflake", "mysql": "mysql"}
COMPILE_VARS = {"as_of_date": "2026-03-01", "business_time_zone": "UTC"}
INCREMENTAL_MODEL = "int_orders__monthly_rollup"


@dataclass(frozen=True)
class Allowed:
    """SQL the engine accepts and sqlglot cannot parse: a whole statement (`pattern`, whitespace collapsed),
    or a construct cut out of a statement before it is parsed (`construct`: the rest is still checked).
    `keyword` is how the code that sends it spells it, in the files `sent_by` (a glob from the repository,
    or from dbt's package with "dbt:"): an entry whose keyword is gone from them is stale and fails."""

    reason: str
    keyword: str
    sent_by: str
    pattern: str = ""
    construct: str = ""

    def matches(self, sql: str) -> bool:
        return bool(self.pattern) and re.fullmatch(self.pattern, _collapse(sql), re.IGNORECASE) is not None

    def cut(self, sql: str) -> str:
        return re.sub(self.construct, " ", sql, flags=re.IGNORECASE) if self.construct else sql


_IDENT = r"(?:`[^`]+`|\w+)(?:\.(?:`[^`]+`|\w+))*"
_DBT_COMMENT = r"(?: /\* \{\"app\": \"dbt\".*\} \*/)?"
ALLOWLIST: dict[str, list[Allowed]] = {
    "snowflake": [
        # dbt-snowflake's own introspection (list_relations_without_caching lists the schema's UDFs). Valid
        # Snowflake: SHOW USER FUNCTIONS [IN <schema_name>]. sqlglot's Snowflake dialect has no parser for SHOW
        # USER FUNCTIONS and keeps it as an opaque Command.
        Allowed(
            "dbt-snowflake: SHOW USER FUNCTIONS",
            "show user functions",
            "dbt:include/snowflake/macros/**/*.sql",
            pattern=rf"show user functions in {_IDENT}{_DBT_COMMENT}",
        ),
    ],
    "mysql": [
        # runner/tidb.py start_snapshot. MySQL and TiDB syntax (on TiDB the same as BEGIN: a snapshot at the
        # start); sqlglot's MySQL dialect parses START TRANSACTION without characteristics only.
        Allowed(
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
            "runner/*.py",
            pattern=r"START TRANSACTION WITH CONSISTENT SNAPSHOT",
        ),
        # loaders/bulk.py load_tsv. MySQL and TiDB (LOAD DATA LOCAL INFILE ... INTO TABLE ... CHARACTER SET ...
        # FIELDS ... LINES ... (columns) is TiDB's grammar too); sqlglot's MySQL dialect has no parser for LOAD
        # DATA ... INFILE (only Hive's LOAD DATA INPATH). The pattern pins the exact shape the loader sends.
        Allowed(
            "LOAD DATA LOCAL INFILE",
            "LOAD DATA LOCAL INFILE",
            "loaders/*.py",
            pattern=rf"LOAD DATA LOCAL INFILE '[^']+' INTO TABLE {_IDENT} CHARACTER SET utf8mb4 "
            r"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' \(`\w+`(?:, `\w+`)*\)",
        ),
        # loaders/export.py: the swap of every serving table at once. MySQL and TiDB (several pairs in one
        # statement, atomically); sqlglot parses one pair only and keeps a list as an opaque Command.
        Allowed(
            "multi-table RENAME TABLE",
            "RENAME TABLE",
            "loaders/*.py",
            pattern=rf"RENAME TABLE {_IDENT} TO {_IDENT}(?:, {_IDENT} TO {_IDENT})+",
        ),
        # runner/tiflash.py, on TiDB (TIDB_TIFLASH auto/on). TiDB-only DDL; sqlglot keeps it as a Command.
        Allowed(
            "TiDB: SET TIFLASH REPLICA",
            "SET TIFLASH REPLICA",
            "runner/tiflash.py",
            pattern=rf"ALTER TABLE {_IDENT} SET TIFLASH REPLICA \d+",
        ),
        # runner/sql/001 rendered for TiDB: the TiDB-only column attribute AUTO_RANDOM[(shard_bits[, range_bits])]
        # (explicit keys spread over regions). sqlglot's MySQL dialect does not know it: cut out, the CREATE
        # TABLE around it is still parsed.
        Allowed(
            "TiDB: AUTO_RANDOM column attribute",
            "AUTO_RANDOM",
            "runner/sql/*.sql",
            construct=r"\bAUTO_RANDOM\b(?:\s*\(\s*\d+\s*(?:,\s*\d+\s*)?\))?",
        ),
    ],
}


def _collapse(sql: str) -> str:
    return " ".join(sql.split())


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    allowed: dict[str, int] = field(default_factory=dict)  # allowlist reason -> statements it accepted
    parsed: int = 0


def check(side: str, sql: str, verdict: Verdict, label: str) -> None:
    """Parse `sql` as the side's dialect, errors raised; record a failure (with the SQL and sqlglot's error)."""
    for allowed in ALLOWLIST[side]:
        if allowed.matches(sql):
            verdict.allowed[allowed.reason] = verdict.allowed.get(allowed.reason, 0) + 1
            return
    text = sql
    for allowed in ALLOWLIST[side]:
        cut = allowed.cut(text)
        if cut != text:
            verdict.allowed[allowed.reason] = verdict.allowed.get(allowed.reason, 0) + 1
            text = cut
    try:
        expressions = sqlglot.parse(text, read=DIALECT[side], error_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        error = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # sqlglot underlines the token with terminal codes
        verdict.failures.append(f"{label}\n  sqlglot: {error}\n  SQL: {_shorten(sql)}")
        return
    statements = [e for e in expressions if e is not None]
    if not statements:
        verdict.failures.append(f"{label}\n  sqlglot: no statement in it\n  SQL: {_shorten(sql)}")
    elif any(isinstance(e, exp.Command) for e in statements):
        verdict.failures.append(
            f"{label}\n  sqlglot: unsupported syntax, kept only as an opaque Command (not checked): fix it, or "
            f"allowlist it if the engine accepts it\n  SQL: {_shorten(sql)}"
        )
    else:
        verdict.parsed += 1


def _shorten(sql: str, limit: int = 3000) -> str:
    return sql if len(sql) <= limit else f"{sql[:limit]} … ({len(sql)} characters)"


def assert_clean(side: str, verdict: Verdict) -> None:
    count = len(verdict.failures)
    assert not verdict.failures, f"{count} statement(s) are not valid {side} SQL for sqlglot:\n\n" + "\n\n".join(
        verdict.failures
    )


# --- capture -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    side: str  # "snowflake" or "mysql"
    text: str  # as the caller passed it (placeholders unbound)
    sql: str  # as the server receives it: the parameters bound client-side, as both connectors do
    origin: str  # "runner" (runner/, loaders/), "dbt" (dbt-core and dbt-snowflake's macros) or "other"
    where: str  # the innermost runner/ or loaders/ frame that sent it, e.g. loaders/archive.py:511
    many: bool  # an executemany (bound with its first row)

    @property
    def label(self) -> str:
        return f"[{self.origin}{' ' + self.where if self.where else ''}{' executemany' if self.many else ''}]"


_SOURCES = tuple(str(PROJECT_ROOT / d) + os.sep for d in ("runner", "loaders"))
_DBT = tuple(str(Path(p)) + os.sep for p in dbt.__path__)  # dbt-core, dbt-adapters, dbt-snowflake…


def _caller() -> tuple[str, str]:
    frame = sys._getframe(2)  # 0: here, 1: the instrumented method, 2: its caller
    where, from_dbt = "", False
    while frame is not None:
        name = frame.f_code.co_filename
        from_dbt = from_dbt or name.startswith(_DBT)
        if not where and name.startswith(_SOURCES):
            where = f"{Path(name).relative_to(PROJECT_ROOT)}:{frame.f_lineno}"
        frame = frame.f_back
    if from_dbt:  # dbt's own SQL (its query comment names the node); the runner frame would only be runner/dbt.py
        return "dbt", ""
    return ("runner" if where else "other"), where


def _snowflake_bound(cursor: Any, command: str, params: Any) -> str:
    """The connector's client-side binding (pyformat, its default): `command % params`, each value converted,
    escaped and quoted by its SnowflakeConverter; no params, no interpolation (so a literal % stays)."""
    from snowflake.connector.converter import SnowflakeConverter

    if not params or getattr(cursor._conn, "_paramstyle", "pyformat") not in ("pyformat", "format"):
        return command
    conv = SnowflakeConverter()

    def bound(value: Any) -> Any:
        return conv.quote(conv.escape(conv.to_snowflake(value)))

    if isinstance(params, dict):
        return command % {k: bound(v) for k, v in params.items()}
    return command % tuple(bound(v) for v in params)


class Recorder:
    """Wraps execute/executemany of a cursor class: records each statement, then runs it unchanged."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self._inside = threading.local()  # executemany runs execute per row (fakesnow) or batch (pymysql)

    def wrap(self, side: str, method: Callable[..., Any], many: bool) -> Callable[..., Any]:
        recorder = self

        def instrumented(cursor: Any, query: Any, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
            if getattr(recorder._inside, "depth", 0):
                return method(cursor, query, args, *rest, **kwargs)
            text = query.decode() if isinstance(query, bytes) else str(query)
            if many and not isinstance(args, (list, tuple)):
                args = list(args)  # an iterator is read once: hand the driver the rows we looked at
            params = (args[0] if args else None) if many else args
            origin, where = _caller()
            try:
                sql = cursor.mogrify(text, params) if side == "mysql" else _snowflake_bound(cursor, text, params)
            except Exception as exc:  # the connector would fail the same way
                sql = f"-- cannot bind {params!r}: {exc}\n{text}"
            recorder.sent.append(Sent(side, text, sql, origin, where, many))
            recorder._inside.depth = 1
            try:
                return method(cursor, query, args, *rest, **kwargs)
            finally:
                recorder._inside.depth = 0

        return instrumented


@dataclass
class Run:
    settings: Settings
    sent: list[Sent]
    seconds: float

    def of(self, side: str) -> list[Sent]:
        return [s for s in self.sent if s.side == side]


@pytest.fixture(scope="module")
def run(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A small pipeline, in-process, every statement of both drivers recorded: init, generate, archive,
    transform, export, verify, a live burst, recheck, purge, the serving queries and status."""
    from fakesnow.cursor import FakeSnowflakeCursor

    settings = make_settings(server, Path(tmp_path_factory.mktemp("dialect")), "dialect")
    recorder = Recorder()
    started = time.perf_counter()
    today = settings.today()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for cls, side in ((FakeSnowflakeCursor, "snowflake"), (pymysql.cursors.Cursor, "mysql")):
                mp.setattr(cls, "execute", recorder.wrap(side, cls.execute, many=False))
                mp.setattr(cls, "executemany", recorder.wrap(side, cls.executemany, many=True))
            tidb.init_schema(settings)
            pipeline.run_generate(settings, SPEC)
            pipeline.run_archive(settings, today - dt.timedelta(days=SPEC.days), today - dt.timedelta(days=1))
            pipeline.run_transform(settings, today, quiet=True)
            pipeline.run_export(settings)
            pipeline.run_verify(settings, None, None)
            stream(settings, StreamSpec(rate=10, duration=1.0, seed=3))  # moves shipments of archived days
            pipeline.run_recheck(settings, today, 3)
            pipeline.run_purge(settings, SPEC.days - 4)
            serving.dashboard(settings)
            for user_id in serving.sample_users(settings).values():
                serving.recommend(settings, user_id)
                serving.orders(settings, user_id)
                serving.bill(settings, user_id)
            status.status_tables(settings)
        yield Run(settings, recorder.sent, time.perf_counter() - started)
    finally:
        drop_databases(settings)


def _check_sent(run: Run, side: str) -> Verdict:
    verdict = Verdict()
    seen: set[str] = set()
    for sent in run.of(side):
        if sent.sql in seen:
            continue
        seen.add(sent.sql)
        check(side, sent.sql, verdict, sent.label)
    return verdict


def test_warehouse_statements_are_snowflake_sql(run: Run) -> None:
    sent = run.of("snowflake")
    ours = [s for s in sent if s.origin == "runner"]
    by_dbt = [s for s in sent if s.origin == "dbt"]
    # a gate that saw nothing proves nothing: the run must have sent the statements it is known to send
    assert len(sent) >= 150 and len(ours) >= 50 and len(by_dbt) >= 50, (
        f"too few warehouse statements captured: {len(sent)} ({len(ours)} runner, {len(by_dbt)} dbt)"
    )
    texts = [_collapse(s.text) for s in ours]
    assert any(re.match(r"CREATE (OR REPLACE )?(TRANSIENT |TEMPORARY )?TABLE \w+__STAGE_\w+ \(", t) for t in texts)
    assert any(t.startswith("INSERT INTO ARCHIVE_LOG") for t in texts)
    assert any(s.many for s in ours), "the archive log rows are written by executemany"
    assert any(re.search(r"(?i)\bcreate or replace transient table ", s.text) for s in by_dbt)
    verdict = _check_sent(run, "snowflake")
    print(
        f"\nsnowflake: {len(sent)} sent ({len(ours)} runner, {len(by_dbt)} dbt) in a {run.seconds:.0f} s run, "
        f"{verdict.parsed} distinct parsed, allowlisted {verdict.allowed}"
    )
    assert_clean("Snowflake", verdict)


def test_tidb_statements_are_mysql_sql(run: Run) -> None:
    sent = run.of("mysql")
    ours = [s for s in sent if s.origin == "runner"]
    assert len(sent) >= 150 and len(ours) >= 150, f"too few TiDB statements captured: {len(sent)}"
    texts = [_collapse(s.text) for s in ours]
    assert "START TRANSACTION WITH CONSISTENT SNAPSHOT" in texts
    assert any(t.startswith("RENAME TABLE ") for t in texts)
    assert any(t.startswith(("LOAD DATA LOCAL INFILE", "INSERT INTO")) for t in texts)
    verdict = _check_sent(run, "mysql")
    # and the versioned DDL as rendered for TiDB, with the TiFlash replicas asked for there (only there does
    # TiDB-only DDL appear)
    flavor = tidb.Flavor(is_tidb=True, version="8.5")
    rendered = [
        (f"runner/sql/{p.name}", s)
        for p in tidb.migration_files()
        for s in tidb.render_migration(p, run.settings.tidb, flavor)
    ]
    rendered += [("runner/tiflash.py", s) for s in tiflash.replica_statements(run.settings.tidb)]
    rendered += [("runner/tiflash.py", tiflash.progress_query() % "'shop'")]
    assert any("AUTO_RANDOM" in s for _, s in rendered) and any("TIFLASH" in s for _, s in rendered)
    for path, statement in rendered:
        check("mysql", statement, verdict, f"[{path} rendered for TiDB]")
    print(
        f"\nmysql: {len(sent)} sent ({len(ours)} runner), {len(rendered)} rendered for TiDB, "
        f"{verdict.parsed} distinct parsed, allowlisted {verdict.allowed}"
    )
    assert_clean("MySQL/TiDB", verdict)


def test_allowlist_is_not_stale() -> None:
    """Every allowlist entry is still sent by the code it names: an entry no code needs any more goes."""
    stale = []
    for entries in ALLOWLIST.values():
        for allowed in entries:
            dbt_package = allowed.sent_by.startswith("dbt:")
            root = Path(dbt.__path__[0]) if dbt_package else PROJECT_ROOT
            files = root.glob(allowed.sent_by.removeprefix("dbt:"))
            if not any(allowed.keyword.lower() in f.read_text().lower() for f in files):
                stale.append(f"{allowed.reason} ({allowed.keyword!r} is in no file of {allowed.sent_by})")
    assert not stale, "allowlist entries no code needs any more (remove them):\n" + "\n".join(stale)


# --- dbt models compiled for the snowflake target ------------------------------------------------------------


def _snowflake_env(monkeypatch: pytest.MonkeyPatch, profile: Path, tmp_path: Path) -> None:
    """Dummy credentials for whatever the `snowflake` target reads: a password, or a key pair (a throwaway
    RSA key, encrypted when the profile reads a passphrase). The account is not `fakesnow`, so the
    project's stand-in macros stay off and the SQL is what a real account would get."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    for name in list(os.environ):
        if name.startswith(("SNOWFLAKE_", "SNOWSQL_")):
            monkeypatch.delenv(name)
    target = yaml.safe_load(profile.read_text())["ecommerce"]["outputs"]["snowflake"]
    read = set(re.findall(r"env_var\(\s*['\"](\w+)['\"]", json.dumps(target)))
    passphrase = "dialect-gate" if any("PASSPHRASE" in n for n in read) else None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    key_path = tmp_path / "rsa_key.p8"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    values = {
        "ACCOUNT": "xy12345.eu-west-1",
        "USER": "DIALECT_GATE",
        "PASSWORD": "not-a-password",
        "ROLE": "TRANSFORMER",
        "WAREHOUSE": "TRANSFORMING",
        "DATABASE": "ECOMMERCE",
        "SCHEMA": "ANALYTICS",
        "PRIVATE_KEY_PATH": str(key_path),
    }
    for name, value in values.items():
        monkeypatch.setenv(f"SNOWFLAKE_{name}", value)
    if passphrase:
        for name in (n for n in read if "PASSPHRASE" in n):
            monkeypatch.setenv(name, passphrase)


def _compile(profiles: Path, warehouse_dir: Path, as_of: str) -> tuple[list[str], Path]:
    """`dbt compile` of the whole project for the `snowflake` target, the connector patched by fakesnow (dbt
    still opens a connection: introspection, is_incremental()); every compiled model and data test parsed.
    Returns the models compiled and the directory of their SQL."""
    import fakesnow
    from dbt.cli.main import dbtRunner

    target = profiles / "target"
    args = ["compile", "--quiet", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(profiles)]
    args += ["--target", "snowflake", "--target-path", str(target), "--log-path", str(profiles / "logs")]
    args += ["--vars", json.dumps({**COMPILE_VARS, "as_of_date": as_of})]
    warehouse_dir.mkdir(parents=True, exist_ok=True)
    with fakesnow.patch(db_path=str(warehouse_dir)):
        result = dbtRunner().invoke(args)
    assert result.success and result.exception is None, f"dbt compile failed: {result.exception}"
    nodes = [r.node for r in result.result.results]
    models = sorted(n.name for n in nodes if n.resource_type == "model")
    tests = [n for n in nodes if n.resource_type == "test"]
    project_models = sorted(p.stem for p in (DBT_PROJECT_DIR / "models").rglob("*.sql"))
    # a gate that compiled nothing proves nothing: every model of the project, and its data tests
    assert models == project_models, f"dbt compiled {len(models)} models, the project has {len(project_models)}"
    assert len(tests) >= len(models), f"only {len(tests)} data tests compiled"
    compiled = target / "compiled"
    files = sorted(compiled.rglob("*.sql"))
    hooks = [n for n in nodes if n.resource_type == "operation"]  # the project's on-run-start hook, parsed too
    assert len(files) == len(models) + len(tests) + len(hooks), f"{len(files)} compiled files for {len(nodes)} nodes"
    verdict = Verdict()
    for path in files:
        check("snowflake", path.read_text(), verdict, f"[dbt compile --target snowflake: {path.relative_to(compiled)}]")
    print(f"\ndbt compile (as of {as_of}): {len(models)} models, {len(tests)} data tests, {verdict.parsed} parsed")
    assert_clean("Snowflake (dbt compile)", verdict)
    return models, compiled


@pytest.fixture
def snowflake_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """profiles.example.yml as it is, with dummy SNOWFLAKE_* values for its `snowflake` target."""
    shutil.copy(PROJECT_ROOT / "profiles.example.yml", tmp_path / "profiles.yml")
    _snowflake_env(monkeypatch, tmp_path / "profiles.yml", tmp_path)
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    return tmp_path


def test_models_compiled_for_snowflake_are_snowflake_sql(snowflake_profile: Path) -> None:
    """A first build's SQL: no model exists yet, so the incremental model compiles its full build."""
    _, compiled = _compile(snowflake_profile, snowflake_profile / "warehouse", COMPILE_VARS["as_of_date"])
    (rollup,) = compiled.rglob(f"{INCREMENTAL_MODEL}.sql")
    assert "rebuild_months as (" not in rollup.read_text()


def test_incremental_build_compiled_for_snowflake_is_snowflake_sql(run: Run, snowflake_profile: Path) -> None:
    """The incremental branch, compiled against the warehouse the pipeline built: the rollup exists there, so
    is_incremental() holds and months_to_rebuild queries it. Ten days before the build's as-of date, the months
    of those days change signature, so some are rebuilt and the in_months predicate is compiled too."""
    as_of = run.settings.today() - dt.timedelta(days=10)
    _, compiled = _compile(snowflake_profile, run.settings.warehouse_dir, as_of.isoformat())
    (rollup,) = compiled.rglob(f"{INCREMENTAL_MODEL}.sql")
    text = rollup.read_text()
    assert "rebuild_months as (" in text, "the incremental branch was not compiled"
    assert "order_date >= cast('" in text, "no month to rebuild: the in_months predicate was not compiled"
