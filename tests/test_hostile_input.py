"""Hostile input (issue #3, item 7): property-based tests over the CLI's arguments and the configuration.

Every input gives a correct result (exit 0, checked against the data) or a clear refusal: one line on
stderr starting "error:" (exit 1) or click's usage error (exit 2). Never a traceback, never the
"error: unexpected …" line that `main()` prints for bugs. A refused input writes nothing: the test's
TiDB databases (CHECKSUM TABLE of every table, the table and view lists), the warehouse (every table's
content) and the files of the run's home are fingerprinted before and after. SQL fragments must not
run: no table disappears and no database named by a fragment appears.

The CLI runs in-process through `runner.cli.main()` (the error-to-one-line mapping lives there), so a
few hundred inputs take seconds. The inputs tried are counted per category and outcome; the count is
printed at the end of the module.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import ipaddress
import json
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pymysql
import pytest
import yaml
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from loaders.archive import EARLIEST_DAY
from loaders.generate import GenerateSpec, generate
from runner import cli, tidb
from runner.config import Settings, TiDBConfig, WarehouseConfig, load_profile
from runner.errors import EcomError
from tests.conftest import drop_databases, env_for, make_settings

TODAY = dt.datetime.now(dt.UTC).date()  # the tests' business zone is UTC
YESTERDAY = TODAY - dt.timedelta(days=1)
CANARY = "ecomt_pwned"  # the database every injection fragment tries to create
TRIED: collections.Counter[tuple[str, str]] = collections.Counter()


def bounded(examples: int) -> Any:
    return hsettings(
        max_examples=examples,
        deadline=None,
        database=None,  # no .hypothesis/ folder in the repository
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------------------------------------- the CLI


@dataclasses.dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def ecom(env: dict[str, str], *args: str) -> Run:
    """`ecom ARGS` in this process, through main(): its exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["ecom", *args]
    code: int = 0
    try:
        with environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return Run(tuple(args), code, out.getvalue(), err.getvalue())


def outcome(run: Run, category: str) -> str:
    """'result' (exit 0), 'error' (one line "error: …", exit 1) or 'usage' (click's usage error, exit 2);
    anything else fails the test."""
    text = run.out + run.err
    assert "Traceback" not in text, run
    lines = [line for line in run.err.splitlines() if line.strip()]
    if run.code == 0:
        kind = "result"
    elif run.code == 2:
        assert lines and lines[-1].startswith("Error: "), run
        assert lines[0].startswith("Usage: "), run
        kind = "usage"
    else:
        assert run.code == 1, run
        assert len(lines) == 1, run
        assert lines[0].startswith("error: "), run
        assert not lines[0].startswith("error: unexpected"), run
        kind = "error"
    TRIED[(category, kind)] += 1
    return kind


# ---------------------------------------------------------------------------------------- fingerprints


def _root(cfg: TiDBConfig) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password, autocommit=True, ssl_disabled=not cfg.ssl_ca
    )


def tidb_state(s: Settings) -> dict[str, Any]:
    """The test's two databases: which exist, their tables and views, a checksum of every table."""
    cfg = s.tidb
    state: dict[str, Any] = {}
    conn = _root(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name IN (%s, %s) "
                "OR schema_name LIKE %s OR schema_name LIKE %s ORDER BY 1",
                (cfg.database, cfg.express_database, CANARY.replace("_", "\\_") + "%", "ecomt\\_hxabsent\\_%"),
            )
            state["databases"] = [row[0] for row in cur.fetchall()]
            cur.execute(
                "SELECT t.table_schema, t.table_name, t.table_type, v.view_definition FROM information_schema.tables t "
                "LEFT JOIN information_schema.views v USING (table_schema, table_name) "
                "WHERE t.table_schema IN (%s, %s) ORDER BY 1, 2",
                (cfg.database, cfg.express_database),
            )
            state["tables"] = list(cur.fetchall())
            # run_leases is the runs' turn-taking (runner/lease.py): a refused run may have taken and given back
            # its turn, which is bookkeeping, not data
            tables = [
                f"`{db}`.`{name}`"
                for db, name, kind, _ in state["tables"]
                if kind == "BASE TABLE" and name != "run_leases"
            ]
            if tables:  # the names were read from the server, and these are the test's own databases
                cur.execute(f"CHECKSUM TABLE {', '.join(tables)} EXTENDED")
                state.update({name: checksum for name, checksum in cur.fetchall()})
    finally:
        conn.close()
    return state


def warehouse_state(home: Path) -> Any:
    """Every table of the stand-in's files (read-only, so reading changes nothing), hashed by content."""
    folder = home / "warehouse"
    if not folder.exists():
        return "no warehouse"
    state: dict[str, str] = {}
    for path in sorted(folder.glob("*.db")):
        con = duckdb.connect(str(path), read_only=True)
        try:
            tables = con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT LIKE '\\_fs%' ESCAPE '\\' ORDER BY 1, 2"
            ).fetchall()
            for schema, table in tables:
                rows = con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
                digest = hashlib.sha256(repr(sorted(repr(row) for row in rows)).encode()).hexdigest()
                state[f"{path.name}:{schema}.{table}"] = f"{len(rows)} rows {digest[:16]}"
        finally:
            con.close()
    return state


def home_files(home: Path) -> list[str]:
    """The files of the run's home, but for the warehouse's own (its content is compared above)."""
    return sorted(
        str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and not p.is_relative_to(home / "warehouse")
    )


def fingerprint(s: Settings) -> dict[str, Any]:
    return {"tidb": tidb_state(s), "warehouse": warehouse_state(s.home), "home": home_files(s.home)}


def archive_log_days(home: Path) -> set[dt.date]:
    path = home / "warehouse" / "ECOMMERCE.db"
    if not path.exists():
        return set()
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {row[0] for row in con.execute("SELECT DISTINCT ARCHIVE_DATE FROM RAW.ARCHIVE_LOG").fetchall()}
    except duckdb.CatalogException:
        return set()
    finally:
        con.close()


def assert_refused_cleanly(before: dict[str, Any], s: Settings, run: Run, reader: bool = False) -> None:
    after = fingerprint(s)
    if reader and before["warehouse"] == "no warehouse" and after["warehouse"] == {}:
        before = {**before, "warehouse": {}}  # a reader opens the warehouse: an empty one may appear, no table
    assert after == before, f"a refused input wrote something: {run}"
    assert not [db for db in after["tidb"]["databases"] if db.startswith(CANARY)], run


# ----------------------------------------------------------------------------------------------- worlds

# Serving rows put in place by hand (the marts' job, tested elsewhere), so recommend and bill have answers.
HIGH_TIER = [5, 6]
LOW_TIER = [1, 2, 3]
LABELS = {1: "high", 2: "low"}
BILLS = {1: [("2026-01", 2, 3, "30.00"), ("2026-02", 1, 1, "9.99")], 3: [("2025-12", 4, 6, "120.50")]}


def _serve(s: Settings) -> None:
    db = s.tidb.database
    conn = _root(s.tidb)
    try:
        with conn.cursor() as cur:
            for label, tier in (("high", HIGH_TIER), ("low", LOW_TIER)):
                for rank, item_id in enumerate(tier, start=1):
                    cur.execute(
                        f"INSERT INTO `{db}`.hot_items SELECT %s, %s, id, %s, name, price, item_type, 1, "
                        f"%s, %s, %s, NOW() FROM `{db}`.items WHERE id = %s",
                        (label, rank, 10 - rank, TODAY - dt.timedelta(days=7), YESTERDAY, TODAY, item_id),
                    )
            for user_id, label in LABELS.items():
                cur.execute(
                    f"INSERT INTO `{db}`.user_labels VALUES (%s, %s, 1, 1, 1, 1, %s, NOW())", (user_id, label, TODAY)
                )
            for user_id, bills in BILLS.items():
                for month, count, units, total in bills:
                    cur.execute(
                        f"INSERT INTO `{db}`.monthly_bills VALUES (%s, %s, %s, %s, %s, %s, NOW())",
                        (user_id, month, count, units, total, TODAY),
                    )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def world(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A small shop: schema, 30 users, 6 items, 150 orders over the last 20 days, hand-made serving rows."""
    s = make_settings(server, tmp_path_factory.mktemp("hostile"), "hx")
    tidb.init_schema(s)
    generate(s, GenerateSpec(users=30, items=6, orders=150, days=20, seed=7))
    _serve(s)
    yield s
    drop_databases(s)


@pytest.fixture(scope="module")
def empty_shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A schema without data: a stream that is allowed to start has nothing to order and stops at once."""
    s = make_settings(server, tmp_path_factory.mktemp("hostile_empty"), "hxe")
    tidb.init_schema(s)
    yield s
    drop_databases(s)


@pytest.fixture(scope="module", autouse=True)
def report_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    lines = [f"hostile inputs tried: {sum(TRIED.values())}"]
    for category in sorted({c for c, _ in TRIED}):
        kinds = ", ".join(f"{k} {n}" for (c, k), n in sorted(TRIED.items()) if c == category)
        lines.append(f"  {category}: {sum(n for (c, _), n in TRIED.items() if c == category)} ({kinds})")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print("\n" + "\n".join(lines))


def _query(s: Settings, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
    """Rows of one query on the shop's business database, over a connection of the test's own."""
    conn = _root(s.tidb)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def _orders_of(s: Settings, user_id: int, limit: int) -> list[int]:
    sql = f"SELECT id FROM `{s.tidb.database}`.orders WHERE user_id = %s ORDER BY created_at DESC, id DESC LIMIT %s"
    return [row[0] for row in _query(s, sql, (user_id, limit))]


def _orders_between(s: Settings, first: dt.date, last: dt.date) -> int:
    sql = f"SELECT COUNT(*) FROM `{s.tidb.database}`.orders WHERE created_at >= %s AND created_at < %s"
    return int(_query(s, sql, (first, last + dt.timedelta(days=1)))[0][0])


# ------------------------------------------------------------------------------------------ strategies

# Text that can be an argv entry or an environment value (no NUL, no lone surrogate).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
FRAGMENTS = [
    "1 OR 1=1",
    "1' OR '1'='1",
    "'; DROP TABLE users; --",
    "1; DROP TABLE orders",
    "1); DELETE FROM orders; --",
    '" OR ""="',
    "1 UNION SELECT user, password FROM mysql.user",
    "`; DROP DATABASE `<DB>`; --",
    "<DB>`.users; DROP TABLE `<DB>`.`items",
    f"'; CREATE DATABASE {CANARY}_q; --",
    f"`; CREATE DATABASE {CANARY}_b; --",
    f"1; CREATE DATABASE {CANARY}_s",
    "x'); TRUNCATE TABLE <DB>.orders; #",
    "' OR SLEEP(3) --",
    "1/*!50000 OR 1=1*/",
    "\\'; DROP TABLE items; --",
    "%s",
    "%(user_id)s",
    "{0}{db}",
    "{{ 7*7 }}",
    "$(touch /tmp/ecomt_pwned)",
    "0x31",
    "1e3",
    "--1",
    "1;",
]
FRAGMENT = st.sampled_from(FRAGMENTS)
HOSTILE_TEXT = st.one_of(
    TEXT,
    FRAGMENT,
    st.tuples(TEXT, FRAGMENT, TEXT).map("".join),
    # Arabic-Indic and full-width digits, a ligature, a right-to-left override, emoji
    st.sampled_from(["", " ", "\n", "\t1", "\u0661\u0662", "\uff11\uff12", "\u0662\u0660\u0662\u0666-01-01"]),
    st.sampled_from(["\uff12\uff10\uff12\uff16-01-01", "\ufb01", "\u202e1", "\U0001f600", "\U0001f004" * 30]),
    st.text(max_size=5000, alphabet="9").map(lambda t: t or "9"),
)
HUGE_INT = st.integers(min_value=-(10**40), max_value=10**40)


def with_db(text: str, s: Settings) -> str:
    return text.replace("<DB>", s.tidb.database)


# --------------------------------------------------------------------------------- user ids and limits

USER_ID = st.one_of(
    st.integers(min_value=1, max_value=35).map(str),  # existing users (1..30) and a few that are not
    HUGE_INT.map(str),
    st.sampled_from(["0", "-1", "-0", str(2**63 - 1), str(2**63), str(-(2**63)), " 7 ", "0007", "1_0", "+3"]),
    HOSTILE_TEXT,
)
LIMIT = st.one_of(st.none(), st.integers(min_value=1, max_value=40).map(str), HUGE_INT.map(str), HOSTILE_TEXT)
MONTH = st.one_of(
    st.none(),
    st.sampled_from(["2026-01", "2026-02", "2025-12", "2026-13", "2026-00", "2026-1", "26-01", "2026-01-01"]),
    st.builds("{:04d}-{:02d}".format, st.integers(0, 99999), st.integers(0, 99)),
    HOSTILE_TEXT,
)


def _as_click_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


@bounded(70)
@given(
    command=st.sampled_from(["recommend", "orders", "bill"]), user=USER_ID, limit=LIMIT, month=MONTH, dash=st.booleans()
)
def test_user_ids_limits_and_months(
    world: Settings, command: str, user: str, limit: str | None, month: str | None, dash: bool
) -> None:
    user = with_db(user, world)
    args = [command, "--json"]
    if command == "orders" and limit is not None:
        args.append(f"--limit={with_db(limit, world)}")
    if command == "bill" and month is not None:
        args.append(f"--month={with_db(month, world)}")
    args += ["--", user] if dash else [user]
    before = fingerprint(world)
    run = ecom(env_for(world), *args)
    category = {
        "recommend": "user id (recommend)",
        "orders": "user id + --limit (orders)",
        "bill": "user id + --month (bill)",
    }[command]
    kind = outcome(run, category)
    assert_refused_cleanly(before, world, run)  # these commands only read: nothing changes either way
    user_id = _as_click_int(user)
    if kind != "result":
        if kind == "error" and user_id is not None and 1 <= user_id <= 30:
            # an existing user is refused only for a bad --month
            assert command == "bill" and "is not a month" in run.err, run
        return
    assert user_id is not None and 1 <= user_id <= 30, run  # only existing users get an answer
    payload = run.json()
    if command == "recommend":
        tier = HIGH_TIER if LABELS.get(user_id) == "high" else LOW_TIER
        assert [row["item_id"] for row in payload["rows"]] == tier
        assert [row["rank"] for row in payload["rows"]] == list(range(1, len(tier) + 1))
        assert ("labelled" in payload["note"]) == (user_id in LABELS), payload["note"]
    elif command == "orders":
        wanted = _as_click_int(limit) if limit is not None else 20
        assert wanted is not None and 1 <= wanted <= 1000, run
        assert [row["order_id"] for row in payload["rows"]] == _orders_of(world, user_id, wanted)
    else:
        assert month is None or re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", month), run
        expected = [b for b in BILLS.get(user_id, []) if month is None or b[0] == month]
        assert [(r["month"], r["order_count"], r["units"]) for r in payload["rows"]] == [b[:3] for b in expected]
        assert bool(payload["rows"]) or "no bill" in payload["note"]


# ------------------------------------------------------------------------------------------- dates

IMPOSSIBLE_DATE = st.one_of(
    st.builds("{:04d}-{:02d}-{:02d}".format, st.integers(0, 9999), st.integers(13, 99), st.integers(1, 28)),
    st.builds("{:04d}-{:02d}-{:02d}".format, st.integers(1, 9999), st.integers(1, 12), st.integers(32, 99)),
    st.builds("{:04d}-02-{:02d}".format, st.integers(1, 9999).filter(lambda y: y % 4 != 0), st.just(29)),
    st.builds("{:04d}-{:02d}-30".format, st.integers(1, 9999), st.just(2)),
    st.builds("{:04d}-{:02d}-00".format, st.integers(1, 9999), st.integers(1, 12)),
    st.sampled_from(
        ["0000-01-01", "10000-01-01", "+2026-01-01", "-2026-01-01", "2026-1-1", "2026/01/01", "01/31/2026"]
    ),
    st.sampled_from(["yesterday", "today", "now", "2026-01-01T00:00:00", "2026-01-01 ", " 2026-01-01", "9999-99-99"]),
)
PAST_DAY = st.one_of(
    st.dates(max_value=YESTERDAY),
    st.dates(min_value=YESTERDAY - dt.timedelta(days=25), max_value=YESTERDAY),  # days with orders
    st.dates(min_value=EARLIEST_DAY - dt.timedelta(days=10), max_value=EARLIEST_DAY + dt.timedelta(days=10)),
    st.dates(max_value=dt.date(1, 1, 10)),  # refused: before the earliest day
)
FUTURE_DAY = st.one_of(st.just(TODAY), st.dates(min_value=TODAY), st.just(dt.date.max))
DATE_TEXT = st.one_of(IMPOSSIBLE_DATE, HOSTILE_TEXT, FUTURE_DAY.map(str), PAST_DAY.map(str))


def _day(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def expected_range(date: str | None, first: str | None, last: str | None) -> tuple[dt.date, dt.date] | None:
    """What `ecom archive` should archive for these options (None: it must refuse)."""
    if date is not None:
        if first is not None or last is not None:
            return None
        first = last = date
    if first is None or last is None:
        return None  # (neither given: yesterday — never drawn here)
    a, b = _day(first), _day(last)
    if a is None or b is None or a < EARLIEST_DAY or a > b or b >= TODAY or (b - a).days > 3660:
        return None
    return a, b


@st.composite
def archive_options(draw: st.DrawFn) -> tuple[str | None, str | None, str | None]:
    shape = draw(st.sampled_from(["date", "range", "tiny range", "reversed", "from only", "to only", "both", "long"]))
    if shape == "date":
        return draw(DATE_TEXT), None, None
    if shape == "tiny range":  # a valid range is really archived: keep it to three days at most
        start = draw(PAST_DAY)
        end = min(start + dt.timedelta(days=draw(st.integers(0, 2))), YESTERDAY)
        return None, str(start), str(end)
    if shape == "reversed":
        a, b = draw(st.dates()), draw(st.dates())
        assume(a != b)
        return None, str(max(a, b)), str(min(a, b))
    if shape == "long":  # more than ten years: refused before any read
        start = draw(st.dates(max_value=dt.date(2000, 1, 1)))
        return None, str(start), str(start + dt.timedelta(days=draw(st.integers(3661, 20000))))
    if shape == "from only":
        return None, draw(DATE_TEXT), None
    if shape == "to only":
        return None, None, draw(DATE_TEXT)
    if shape == "both":
        return draw(DATE_TEXT), draw(DATE_TEXT), draw(st.none() | DATE_TEXT)
    first, last = draw(DATE_TEXT), draw(DATE_TEXT)
    if (pair := expected_range(None, first, last)) is not None and (pair[1] - pair[0]).days > 2:
        last = str(pair[0])  # never a long valid range: it would really run
    return None, first, last


@bounded(35)
@given(options=archive_options())
def test_archive_dates(world: Settings, options: tuple[str | None, str | None, str | None]) -> None:
    date, first, last = (None if v is None else with_db(v, world) for v in options)
    args = ["archive", "--json"]
    for name, value in (("date", date), ("from", first), ("to", last)):
        if value is not None:
            args.append(f"--{name}={value}")
    expected = expected_range(date, first, last)
    before = fingerprint(world)
    run = ecom(env_for(world), *args)
    kind = outcome(run, "archive --date/--from/--to")
    if expected is None:
        assert kind != "result", run
        assert_refused_cleanly(before, world, run)
        return
    assert kind == "result", run  # a valid past range is archived
    payload = run.json()
    assert (payload["first_day"], payload["last_day"]) == (str(expected[0]), str(expected[1]))
    assert payload["orders"] == _orders_between(world, *expected)
    days = {expected[0] + dt.timedelta(days=d) for d in range((expected[1] - expected[0]).days + 1)}
    assert days <= archive_log_days(world.home)
    after = fingerprint(world)["tidb"]
    run_log = f"{world.tidb.database}.pipeline_runs"
    assert {k: v for k, v in after.items() if k != run_log} == {k: v for k, v in before["tidb"].items() if k != run_log}
    assert after[run_log] != before["tidb"][run_log]  # archiving reads TiDB and writes only its run log there


@st.composite
def verify_options(draw: st.DrawFn) -> tuple[str | None, str | None]:
    shape = draw(st.sampled_from(["both", "range", "from only", "to only", "reversed", "long"]))
    if shape == "range":
        start = draw(PAST_DAY)
        return str(start), str(min(start + dt.timedelta(days=draw(st.integers(0, 40))), YESTERDAY))
    if shape == "reversed":
        a, b = draw(st.dates()), draw(st.dates())
        assume(a != b)
        return str(max(a, b)), str(min(a, b))
    if shape == "long":
        start = draw(st.dates(max_value=dt.date(2000, 1, 1)))
        return str(start), str(start + dt.timedelta(days=draw(st.integers(3661, 9000))))
    if shape == "from only":
        return draw(DATE_TEXT), None
    if shape == "to only":
        return None, draw(DATE_TEXT)
    return draw(DATE_TEXT), draw(DATE_TEXT)


@bounded(25)
@given(options=verify_options())
def test_verify_range(world: Settings, options: tuple[str | None, str | None]) -> None:
    """`ecom verify --from/--to` only reads: whatever the dates, nothing changes on either side."""
    first, last = (None if v is None else with_db(v, world) for v in options)
    args = ["verify", "--json"]
    args += [f"--from={first}"] if first is not None else []
    args += [f"--to={last}"] if last is not None else []
    before = fingerprint(world)
    run = ecom(env_for(world), *args)
    kind = outcome(run, "verify --from/--to")
    assert_refused_cleanly(before, world, run, reader=True)  # (refused or not: verify writes nothing)
    expected = expected_range(None, first, last)
    if expected is None:
        assert kind != "result" and not run.out, run  # refused before it compares anything
        return
    a, b = expected
    if kind == "error":  # a day that differs (days not archived yet): the table, then one line
        assert "checks differ" in run.err, run
    payload = run.json()
    payload = payload[0] if isinstance(payload, list) else payload  # (then a table of the differences)
    assert payload["title"].startswith(f"Verify {a}..{b}:"), payload
    daily = {row["table"]: row["checks"] for row in payload["rows"]}
    assert daily["ORDERS"] == daily["EXPRESS"] == (b - a).days + 1, payload


@pytest.fixture(scope="module")
def own_warehouse(world: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The shop with an empty warehouse of its own: none of its days is proven there, so none may be purged."""
    return dataclasses.replace(world, home=tmp_path_factory.mktemp("hostile_own_warehouse"))


COUNT_OPTION = st.one_of(st.none(), HUGE_INT.map(str), st.integers(-2, 40).map(str), HOSTILE_TEXT)


@bounded(25)
@given(
    # valid days only before 2000 (no orders): a recent day archived here would be proven, then purged
    day=st.one_of(
        st.dates(max_value=dt.date(1999, 12, 31)).map(str), IMPOSSIBLE_DATE, HOSTILE_TEXT, FUTURE_DAY.map(str)
    ),
    recheck=st.one_of(COUNT_OPTION, st.sampled_from(["3660", "3661", "0"])),
    purge=st.one_of(COUNT_OPTION, st.sampled_from(["36500", "36501", "0", "1"])),
)
def test_archive_recheck_and_purge(own_warehouse: Settings, day: str, recheck: str | None, purge: str | None) -> None:
    """--recheck-days / --purge-older-than: refused with the day (before any recheck or purge writes), or run:
    the far-past day is archived, nothing differs, and no TiDB row goes (no recent day is proven here)."""
    s = own_warehouse
    day = with_db(day, s)
    args = ["archive", "--json", f"--date={day}"]
    args += [f"--recheck-days={recheck}"] if recheck is not None else []
    args += [f"--purge-older-than={purge}"] if purge is not None else []
    before = fingerprint(s)
    run = ecom(env_for(s), *args)
    kind = outcome(run, "archive --recheck-days/--purge-older-than")
    expected = expected_range(day, None, None)
    n_recheck = 0 if recheck is None else _as_click_int(recheck)
    n_purge = 1 if purge is None else _as_click_int(purge)
    valid = (
        expected is not None
        and n_recheck is not None
        and 0 <= n_recheck <= 3660
        and n_recheck <= (expected[0] - EARLIEST_DAY).days
        and n_purge is not None
        and 1 <= n_purge <= 36500
    )
    if not valid:
        assert kind != "result", run
        assert_refused_cleanly(before, s, run)
        return
    assert kind == "result", run
    payload = run.json()
    assert expected is not None and payload["first_day"] == str(expected[0]) and payload["orders"] == 0
    assert payload["rearchived_days"] == [] and payload["purged_days"] == [], payload
    after = fingerprint(s)["tidb"]
    kept = ("pipeline_runs", "archive_purges")  # the run log (and a purge's own bookkeeping) may change
    changed = {k for k in after if after[k] != before["tidb"].get(k)}
    assert all(k.split(".")[-1] in kept for k in changed), changed
    assert expected[0] in archive_log_days(s.home)


@pytest.mark.parametrize(
    "options",
    [
        [f"--date={TODAY}"],  # refused (today is not over): the recheck of the days before it ran first
        [f"--from={YESTERDAY}", f"--to={YESTERDAY - dt.timedelta(days=5)}"],  # reversed
        ["--date=0001-01-01"],  # before the earliest day (the recheck would reach before year 1: OverflowError)
        [f"--date={EARLIEST_DAY}"],  # the recheck would reach before the earliest day
    ],
)
def test_refused_archive_rechecks_nothing(own_warehouse: Settings, options: list[str]) -> None:
    """The days before a refused range hold orders that are not archived here (they differ): a recheck
    that ran before the range check archived them, then the command failed. Now nothing is written."""
    before = fingerprint(own_warehouse)
    run = ecom(env_for(own_warehouse), "archive", "--json", "--recheck-days=3", *options)
    assert outcome(run, "archive --recheck-days/--purge-older-than") == "error", run
    assert_refused_cleanly(before, own_warehouse, run)


@pytest.fixture(scope="module")
def year_one(world: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The shop with its own warehouse holding one archived day, the earliest that can be: the edge of the range."""
    s = dataclasses.replace(world, home=tmp_path_factory.mktemp("hostile_year_one"))
    run = ecom(env_for(s), "archive", f"--date={EARLIEST_DAY}", "--json")
    assert run.code == 0 and run.json()["orders"] == 0, run
    assert archive_log_days(s.home) == {EARLIEST_DAY}
    return s


@bounded(40)
@given(as_of=st.one_of(DATE_TEXT, st.dates(max_value=EARLIEST_DAY + dt.timedelta(days=11)).map(str)))
def test_transform_as_of(year_one: Settings, as_of: str) -> None:
    """No as-of date can start dbt here (no whole week is archived): every one is refused, clearly."""
    as_of = with_db(as_of, year_one)
    before = fingerprint(year_one)
    run = ecom(env_for(year_one), "transform", f"--as-of={as_of}")
    assert outcome(run, "transform --as-of") != "result", run
    assert_refused_cleanly(before, year_one, run)


# ------------------------------------------------------------------------------------------- sizes

SIZE_LIMITS = {
    "users": (1, 10**9),
    "items": (2, 10**9),
    "orders": (1, 10**10),
    "days": (1, 36_500),
    "seed": (0, 2**63 - 1),
}
SMALL_VALID = {"users": (1, 40), "items": (2, 10), "orders": (1, 60), "days": (1, 10), "seed": (0, 1000)}
NOT_AN_INT = st.one_of(
    st.sampled_from(["", "1e9", "1.5", "nan", "inf", "0x10", "10**9", "\u0661\u0660", "1,000", "9" * 5000]),
    HOSTILE_TEXT.filter(lambda t: _as_click_int(t) is None),
)


def bad_size(name: str) -> st.SearchStrategy[str]:
    low, high = SIZE_LIMITS[name]
    return st.one_of(
        st.integers(min_value=-(10**30), max_value=low - 1).map(str),
        st.integers(min_value=high + 1, max_value=10**30).map(str),
        st.sampled_from([str(low - 1), str(high + 1), "-0" if low > 0 else "-1"]),
        NOT_AN_INT,
    )


def small_size(name: str) -> st.SearchStrategy[str]:
    return st.integers(*SMALL_VALID[name]).map(str)


@st.composite
def invalid_spec(draw: st.DrawFn) -> list[str]:
    """Sizes of which at least one is invalid; the others small (so even a validation bug stays cheap)."""
    bad = draw(st.sampled_from(sorted(SIZE_LIMITS)))
    args = []
    for name in SIZE_LIMITS:
        value = draw(bad_size(name) if name == bad else st.one_of(small_size(name), bad_size(name)))
        args.append(f"--{name}={value}")
    return args


@bounded(45)
@given(command=st.sampled_from(["generate", "demo"]), sizes=invalid_spec())
def test_generate_and_demo_sizes(world: Settings, command: str, sizes: list[str]) -> None:
    """A bad size is refused before anything is written (generate truncates tables and drops the archive)."""
    args = [command, *sizes]
    if command == "demo":
        args += ["--stream-seconds=1", "--stream-rate=1"]
    before = fingerprint(world)
    run = ecom(env_for(world), *args)
    assert outcome(run, "generate/demo sizes") != "result", run
    assert_refused_cleanly(before, world, run)


FLOAT_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e6, max_value=1e6).map(str),
    st.sampled_from(
        ["nan", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "0", "-0", "0x1p3", "1_0", "", "5e-324"]
    ),
    HUGE_INT.map(str),
    HOSTILE_TEXT,
)


def _rate_ok(text: str) -> bool:
    try:
        return 0 < float(text) <= 10_000
    except ValueError:
        return False


def _duration_ok(text: str) -> bool:
    try:
        return 0 < float(text) <= 7 * 86400
    except ValueError:
        return False


@bounded(50)
@given(rate=FLOAT_TEXT, duration=FLOAT_TEXT, seed=st.one_of(st.none(), HUGE_INT.map(str), HOSTILE_TEXT))
def test_stream_rate_duration_seed(empty_shop: Settings, rate: str, duration: str, seed: str | None) -> None:
    """On a shop without data a stream that passes validation stops at once ("no users or items")."""
    args = ["stream", f"--rate={rate}", f"--duration={duration}"] + ([] if seed is None else [f"--seed={seed}"])
    before = fingerprint(empty_shop)
    run = ecom(env_for(empty_shop), *args)
    kind = outcome(run, "stream --rate/--duration/--seed")
    assert kind != "result", run
    assert_refused_cleanly(before, empty_shop, run)
    seed_ok = seed is None or (_as_click_int(seed) is not None and 0 <= int(seed) < 2**63)
    if _rate_ok(rate) and _duration_ok(duration) and seed_ok:
        assert "no users or items" in run.err, run
    elif kind == "error":
        assert "must be" in run.err, run


@bounded(25)
@given(
    seconds=FLOAT_TEXT.filter(lambda t: not _duration_ok(t)),
    rate=st.one_of(st.just("1"), FLOAT_TEXT),
)
def test_demo_stream_options(world: Settings, seconds: str, rate: str) -> None:
    """The demo checks its live burst before it resets anything (a tiny spec: a bug would stay cheap)."""
    args = ["demo", "--users=3", "--items=2", "--orders=5", "--days=8", f"--stream-seconds={seconds}"]
    before = fingerprint(world)
    run = ecom(env_for(world), *args, f"--stream-rate={rate}")
    assert outcome(run, "demo --stream-seconds/--stream-rate") != "result", run
    assert_refused_cleanly(before, world, run)


# ------------------------------------------------------------------------------------------- config

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
NOT_A_NAME = st.one_of(
    HOSTILE_TEXT,
    st.sampled_from(
        ["a-b", "a`b", "a'b", 'a"b', "a b", "naïve", "ecomt_x\n", "ecomt_x\r\n", "1abc", "x" * 65, "\uff21"]
    ),
    st.tuples(st.just("ecomt_hx_"), FRAGMENT).map("".join),
).filter(lambda t: t != "" and not IDENTIFIER.fullmatch(t))
ABSENT_NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=40).map(
    lambda t: "ecomt_hxabsent_" + t
)


@bounded(35)
@given(database=st.one_of(NOT_A_NAME, ABSENT_NAME), express=st.one_of(st.none(), NOT_A_NAME, ABSENT_NAME))
def test_database_names(world: Settings, database: str, express: str | None) -> None:
    """A bad TIDB_DATABASE or TIDB_EXPRESS_DATABASE is refused by name; a good name of a database that does
    not exist is reported as missing (and not created: `recommend` only reads)."""
    database = with_db(database, world)
    express = None if express is None else with_db(express, world)
    env = {**env_for(world), "TIDB_DATABASE": database}
    if express is not None:
        env["TIDB_EXPRESS_DATABASE"] = express
    before = fingerprint(world)
    run = ecom(env, "recommend", "1")
    kind = outcome(run, "config TIDB_DATABASE / TIDB_EXPRESS_DATABASE")
    assert kind == "error", run
    assert_refused_cleanly(before, world, run)
    if not IDENTIFIER.fullmatch(database):
        assert "TIDB_DATABASE" in run.err and "not a valid name" in run.err, run
    elif express is not None and not IDENTIFIER.fullmatch(express):
        assert "TIDB_EXPRESS_DATABASE" in run.err, run
    else:
        assert "does not exist" in run.err, run


def _addresses(host: str) -> set[str] | None:
    """Where a TIDB_HOST leads (None: nowhere: not a name, or no address)."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, 3306, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return None


def _local(addresses: set[str]) -> bool:
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in ("0.0.0.0", "::") for a in addresses)


@bounded(35)
@given(
    port=st.one_of(
        HOSTILE_TEXT,
        HUGE_INT.map(str),
        st.sampled_from(["3306", " 3306", "+3306", "03306", "3_306", "٣٣٠٦", "0", "65536", "-3306", "1"]),
    ),
    host=st.one_of(
        st.none(),
        HOSTILE_TEXT.filter(lambda t: len(t) < 300),
        st.sampled_from(["", "localhost", "a" * 64, "a" * 64 + ".example", ".", "..", "[::1]", "127.0.0.1:3306"]),
    ),
)
def test_port_and_host(world: Settings, port: str, host: str | None) -> None:
    """TIDB_PORT and TIDB_HOST: refused, unreachable (one line each), or `init` on the shop (a no-op)."""
    port = with_db(port, world)
    env = {**env_for(world), "TIDB_PORT": port}
    addresses = _addresses(host or "127.0.0.1")
    # "1.2" is 1.0.0.2 and "ab.io" may be a real name: no connection attempts to the internet from a test
    assume(addresses is None or _local(addresses))
    if host is not None:
        env["TIDB_HOST"] = host
    before = fingerprint(world)
    run = ecom(env, "init")
    kind = outcome(run, "config TIDB_PORT / TIDB_HOST")
    assert_refused_cleanly(before, world, run)  # init on the shop is a no-op, refused or not
    if kind == "result":
        assert (3306 if port == "" else _as_click_int(port)) == 3306, run
        assert addresses is not None, run  # only a host that leads here ("0", "127.1", "localhost") can work
        assert run.out.startswith(f"schema of {world.tidb.database}/") and "up to date" in run.out, run


@bounded(30)
@given(user=HOSTILE_TEXT, password=st.one_of(st.none(), HOSTILE_TEXT.filter(bool)))
def test_user_and_password(world: Settings, user: str, password: str | None) -> None:
    """TIDB_USER / TIDB_PASSWORD travel in the login handshake, never in SQL: a refused login, one line."""
    user = with_db(user, world)
    env = {**env_for(world), "TIDB_USER": user}
    if password is not None:
        env["TIDB_PASSWORD"] = password
    before = fingerprint(world)
    run = ecom(env, "init")
    kind = outcome(run, "config TIDB_USER / TIDB_PASSWORD")
    assert_refused_cleanly(before, world, run)
    if kind == "result":  # the default user (an empty TIDB_USER) without a password
        assert user in ("", world.tidb.user) and not password, run
    elif password is None or len(password) >= 8:  # (a short password is redacted out of the words too)
        assert "refused the login" in run.err or "cannot reach" in run.err, run


ZONES = st.one_of(
    HOSTILE_TEXT,
    st.sampled_from(["UTC", "Etc/GMT+12", "Etc/GMT-14", "Pacific/Kiritimati", "Asia/Kolkata", "America", "Etc"]),
    st.sampled_from(["Etc/", "/etc/passwd", "../../../etc/passwd", "zone.tab", "tzdata.zi", "posixrules", "UTC "]),
    st.sampled_from(["utc", "Europe/Berlin\n", "GMT+5"]),
)


@bounded(30)
@given(zone=ZONES)
def test_time_zone(world: Settings, zone: str) -> None:
    """ECOM_TIMEZONE: an unknown zone (or a folder of tzdata) is refused; a known one runs `init` (a no-op)
    unless the server cannot take its UTC offset."""
    before = fingerprint(world)
    run = ecom({**env_for(world), "ECOM_TIMEZONE": with_db(zone, world)}, "init")
    kind = outcome(run, "config ECOM_TIMEZONE")
    assert_refused_cleanly(before, world, run)
    if kind == "error":
        assert "ECOM_TIMEZONE" in run.err, run
    else:
        assert "up to date" in run.out, run


@bounded(20)
@given(target=HOSTILE_TEXT.filter(lambda t: t.strip() not in ("", "local")))
def test_unknown_target(world: Settings, target: str) -> None:
    before = fingerprint(world)
    run = ecom({**env_for(world), "ECOM_TARGET": target}, "archive", f"--date={YESTERDAY}", "--json")
    assert outcome(run, "config ECOM_TARGET") == "error", run
    assert_refused_cleanly(before, world, run)
    assert "target" in run.err or "lacks" in run.err, run


# ---------------------------------------------------------------------------------------- profiles.yml

KEYS = ["ecommerce", "outputs", "target", "local", "snowflake", "type", "account", "user", "password", "database"]
KEYS += ["schema", "role", "warehouse", "threads"]
TEMPLATES = [
    "{{ env_var('ECOMT_NOT_SET') }}",
    "{{ env_var('ECOMT_NOT_SET', 'local') }}",
    "{{ 1/0 }}",
    "{{ x",
    "{{ undefined_name }}",
    "{% if %}",
    "{{ env_var() }}",
    "{{ env_var(1, 2, 3) }}",
    "{{ ''.join(['fake', 'snow']) }}",
    "fakesnow",
    "snowflake",
    "ECOMMERCE",
    "ANALYTICS",
    "a;b",
    "DROP SCHEMA RAW",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    TEXT,
    st.sampled_from(TEMPLATES),
    st.dates(),
)
YAML_VALUE = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), TEXT, st.integers(), st.none()), inner, max_size=5),
    ),
    max_leaves=20,
)
OUTPUT = st.dictionaries(st.sampled_from(KEYS), st.one_of(SCALARS, YAML_VALUE), max_size=9)
NEAR_VALID = st.builds(
    lambda target, outputs: {"ecommerce": {"target": target, "outputs": outputs}},
    st.one_of(st.none(), st.sampled_from(TEMPLATES), SCALARS, YAML_VALUE),
    st.one_of(
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(), st.none()), OUTPUT, max_size=3), YAML_VALUE
    ),
)


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True)


PROFILE_TEXT = st.one_of(
    TEXT,
    st.text(max_size=300),
    YAML_VALUE.map(_dump),
    NEAR_VALID.map(_dump),
    st.sampled_from(
        ["[" * 5000, "{a: " * 3000, "&a [*a, *a]", "!!python/object:os.system {}", "ecommerce: !!binary x"]
    ),
)


@bounded(150)
@given(text=st.one_of(PROFILE_TEXT, st.binary(max_size=200)))
def test_profile_reader(tmp_path: Path, text: str | bytes) -> None:
    """Any profiles.yml: a warehouse configuration whose names are checked, or one clear line."""
    path = tmp_path / "profiles.yml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with environment({k: v for k, v in os.environ.items() if k != "ECOM_TARGET"}):
        try:
            cfg = load_profile(tmp_path, "")
        except EcomError as exc:
            assert str(exc).strip(), repr(exc)  # (the CLI prints it as one line: see the test below)
            TRIED[("config profiles.yml (reader)", "error")] += 1
            return
    assert isinstance(cfg, WarehouseConfig)
    assert IDENTIFIER.fullmatch(cfg.database) and IDENTIFIER.fullmatch(cfg.schema), cfg
    assert all(isinstance(v, str) for v in (cfg.account, cfg.user, cfg.password, cfg.target))
    TRIED[("config profiles.yml (reader)", "result")] += 1


def _without_schema(value: Any) -> Any:
    """The same structure with no key `schema` anywhere: such a profile can never be used."""
    if isinstance(value, dict):
        return {k: _without_schema(v) for k, v in value.items() if k != "schema"}
    if isinstance(value, list):
        return [_without_schema(v) for v in value]
    return value


@bounded(15)
@given(
    text=st.one_of(
        TEXT.filter(lambda t: "schema" not in t),
        YAML_VALUE.map(_without_schema).map(_dump),
        NEAR_VALID.map(_without_schema).map(_dump),
    )
)
def test_malformed_profile_through_the_cli(world: Settings, tmp_path: Path, text: str) -> None:
    """A profile that cannot be used stops `archive` before it reads or writes anything."""
    (tmp_path / "profiles.yml").write_text(text, encoding="utf-8")
    env = {**env_for(world), "DBT_PROFILES_DIR": str(tmp_path)}
    before = fingerprint(world)
    run = ecom(env, "archive", f"--date={YESTERDAY}", "--json")
    assert outcome(run, "config profiles.yml (CLI)") == "error", run
    assert_refused_cleanly(before, world, run)


def test_injection_canaries_never_appeared(world: Settings) -> None:
    """After every fragment above: the shop's tables are all there and no canary database was made."""
    state = tidb_state(world)
    assert not [db for db in state["databases"] if db.startswith(CANARY)]
    tables = {(db, name) for db, name, _, _ in state["tables"]}
    wanted = ("users", "items", "orders", "pipeline_runs", "hot_items", "user_labels", "monthly_bills")
    assert {(world.tidb.database, name) for name in wanted} <= tables
    assert {name for db, name in tables if db == world.tidb.express_database} == {"express"}
    assert not Path("/tmp/ecomt_pwned").exists()
