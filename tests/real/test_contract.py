"""The real-engine contract suite: the whole pipeline through the real CLI (`python -m runner …` subprocesses) on
small data, against the TiDB and the Snowflake account the environment names, in databases of its own
(conftest.py), then checks that what each side holds is consistent.

The pipeline runs once (the `run` fixture); a step that fails stops it, and the test of everything that needed
that step says which step failed and why (its stderr and log).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.real import targets as targets_mod
from tests.real.conftest import PROJECT_ROOT, Resources, say, tidb_connect, warehouse_connection

USERS, ITEMS, ORDERS, DAYS, SEED = 300, 50, 3_000, 10, 20_260
STEP_TIMEOUT = int(os.environ.get("ECOM_REAL_STEP_TIMEOUT") or 1800)  # a real warehouse may queue or resume
SERVING = {  # TiDB serving table -> the dbt mart it is exported from
    "user_labels": "DIM_USER_LABELS",
    "hot_items": "FCT_WEEKLY_HOT_ITEMS",
    "monthly_bills": "FCT_MONTHLY_BILLS",
    "monthly_spending": "FCT_MONTHLY_SPENDING",
}


@dataclass
class Step:
    name: str
    args: list[str]
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self) -> str:
        state = "ok" if self.ok else f"FAILED (exit {self.returncode})"
        return f"{self.name:<24} {self.seconds:7.1f} s  {state}"

    def json(self) -> Any:
        return json.loads(self.stdout)

    def explain(self) -> str:
        tail = "\n".join((self.stderr.strip() or self.stdout.strip()).splitlines()[-25:])
        command = f"`ecom {' '.join(self.args)}`"
        return f"{command} exited {self.returncode} after {self.seconds:.1f} s:\n{tail}\n(log: {self.log})"


class StepFailed(Exception):
    def __init__(self, step: Step) -> None:
        super().__init__(step.explain())
        self.step = step


@dataclass
class Run:
    """The pipeline as it ran: its steps by name, and what the tests compare against."""

    res: Resources
    steps: dict[str, Step] = field(default_factory=dict)
    failed: Step | None = None
    error: str = ""  # a failure of the harness itself, between steps
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    users: dict[str, int] = field(default_factory=dict)  # label -> a user with that label

    def ecom(self, name: str, *args: str) -> Step:
        """One CLI step, in a fresh process, on this run's databases and home; raises StepFailed unless it
        exits 0."""
        secret_values = targets_mod.secrets(os.environ)
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "runner", *args],
                env=self.res.env(),
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT,
            )
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, out = -1, exc.stdout if isinstance(exc.stdout, str) else ""
            err = f"timed out after {STEP_TIMEOUT} s (ECOM_REAL_STEP_TIMEOUT)"
        seconds = time.perf_counter() - started
        log = self.res.home / "steps" / f"{len(self.steps) + 1:02d}-{name}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(
            targets_mod.redact(f"$ ecom {' '.join(args)}\n--- stdout\n{out}\n--- stderr\n{err}", secret_values)
        )
        step = Step(name, list(args), code, seconds, out, err, log)
        self.steps[name] = step
        self.res.steps.append(step)
        say(self.res.config, f"    {step.summary()}")
        if not step.ok:
            raise StepFailed(step)
        return step

    def need(self, *names: str) -> list[Step]:
        """The steps a check needs; fails the check (naming the culprit) when the pipeline did not get that far."""
        if self.error:
            pytest.fail(f"the pipeline stopped: {self.error}", pytrace=False)
        missing = [name for name in names if name not in self.steps]
        if self.failed is not None and (missing or self.failed.name in names):
            pytest.fail(f"step {self.failed.name!r} failed, so this was not checked: {self.failed.explain()}", False)
        assert not missing, f"steps never run: {missing}"
        return [self.steps[name] for name in names]

    # -- direct reads of both sides, independent of the runner's code --

    def tidb(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = tidb_connect(self.res.targets, self.res.tidb_database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def warehouse(self, sql: str) -> list[tuple[Any, ...]]:
        with warehouse_connection(self.res) as conn:
            cur = conn.cursor()
            cur.execute(sql)
            return list(cur.fetchall())


def _pipeline(run: Run) -> None:
    db = run.res.tidb_database
    run.ecom("init", "init")
    run.ecom(
        "generate",
        "generate",
        *("--users", str(USERS), "--items", str(ITEMS), "--orders", str(ORDERS)),
        *("--days", str(DAYS), "--seed", str(SEED)),
    )
    # the days generate wrote (not "today" computed here: no midnight race with the runner's time zone)
    ((first, last),) = run.tidb(f"SELECT first_day, last_day FROM `{db}`.dataset_info")
    run.first_day, run.last_day = first, last
    run.ecom("archive", "archive", "--from", str(first), "--to", str(last), "--json")
    # the last day once more: replaces it (never doubles it); users/items unchanged, so not copied again
    run.ecom("archive again", "archive", "--date", str(last), "--json")
    run.ecom("transform", "transform", "--as-of", str(last + dt.timedelta(days=1)))
    run.ecom("export", "export")
    run.ecom("verify", "verify", "--json")
    run.ecom("status", "status", "--json")
    for label in ("high", "low"):
        rows = run.tidb(
            f"SELECT user_id FROM `{db}`.user_labels WHERE user_label = %s ORDER BY order_count DESC, user_id LIMIT 1",
            (label,),
        )
        if rows:
            run.users[label] = int(rows[0][0])
            run.ecom(f"recommend {label}", "recommend", str(run.users[label]), "--json")
    if "high" in run.users:
        run.ecom("orders", "orders", str(run.users["high"]), "--limit", "5", "--json")
        run.ecom("bill", "bill", str(run.users["high"]), "--json")
    # live orders for today, then today's dashboard (after verify: the stream moves older shipments on)
    run.ecom("stream", "stream", "--rate", "5", "--duration", "3", "--seed", "3")
    run.ecom("dashboard", "dashboard", "--json")


@pytest.fixture(scope="session")
def run(resources: Resources, request: pytest.FixtureRequest) -> Iterator[Run]:
    say(request.config, "  steps     : (each a fresh `python -m runner` process)")
    pipeline = Run(resources)
    try:
        _pipeline(pipeline)
    except StepFailed as exc:
        pipeline.failed = exc.step
    except Exception as exc:  # the harness's own reads (TiDB/warehouse) failing between steps
        pipeline.error = targets_mod.redact(f"{type(exc).__name__}: {exc}", targets_mod.secrets(os.environ))
    yield pipeline


# --- the checks ---------------------------------------------------------------------------------------------------


def test_every_step_exits_0(run: Run) -> None:
    if run.error:
        pytest.fail(f"the pipeline stopped: {run.error}", pytrace=False)
    if run.failed is not None:
        pytest.fail(run.failed.explain(), pytrace=False)
    assert set(run.users) == {"high", "low"}, f"the labels should include both tiers, got users {run.users}"


def test_verify_finds_every_day_equal(run: Run) -> None:
    (verify,) = run.need("verify")
    tables = verify.json()
    summary = tables[0] if isinstance(tables, list) else tables
    by_table = {row["table"]: row for row in summary["rows"]}
    assert {"ORDERS", "EXPRESS"} <= set(by_table), summary
    for table, row in by_table.items():
        assert row["differ"] == 0, f"{table}: {row}"
        assert row["TiDB rows"] == row["warehouse rows"], f"{table}: {row}"
    assert by_table["ORDERS"]["checks"] == (run.last_day - run.first_day).days + 1  # one check per archived day
    assert by_table["ORDERS"]["TiDB amount"] == by_table["ORDERS"]["warehouse amount"]


def test_archive_holds_exactly_what_tidb_holds(run: Run) -> None:
    archive, again = run.need("archive", "archive again")
    db, express = run.res.tidb_database, run.res.tidb_express_database
    start, end = run.first_day, run.last_day + dt.timedelta(days=1)
    # money as whole cents, rounded per row on both sides: exact whatever type an engine sums NUMBER(12,2) in
    ((orders, cents),) = run.tidb(
        f"SELECT COUNT(*), SUM(ROUND(amount * 100)) FROM `{db}`.orders WHERE created_at >= %s AND created_at < %s",
        (start, end),
    )
    ((expresses,),) = run.tidb(
        f"SELECT COUNT(*) FROM `{express}`.express e JOIN `{db}`.orders o ON o.id = e.order_id "
        "WHERE o.created_at >= %s AND o.created_at < %s",
        (start, end),
    )
    ((users,),) = run.tidb(f"SELECT COUNT(*) FROM `{db}`.users")
    ((items,),) = run.tidb(f"SELECT COUNT(*) FROM `{db}`.items")
    ((last_day_orders,),) = run.tidb(
        f"SELECT COUNT(*) FROM `{db}`.orders WHERE created_at >= %s AND created_at < %s", (run.last_day, end)
    )
    assert (orders, users, items) == (ORDERS, USERS, ITEMS)
    summary = archive.json()
    assert (summary["orders"], summary["express"], summary["users"], summary["items"]) == (
        orders,
        expresses,
        users,
        items,
    )
    # the second archive of the last day replaced it; the dimension digests had not moved, so nothing copied
    second = again.json()
    assert (second["orders"], second["users"], second["items"]) == (last_day_orders, 0, 0), second

    ((raw_orders, raw_cents, raw_days),) = run.warehouse(
        "SELECT COUNT(*), SUM(CAST(ROUND(AMOUNT * 100) AS BIGINT)), COUNT(DISTINCT ORDER_DATE) FROM ORDERS"
    )
    ((raw_express,),) = run.warehouse("SELECT COUNT(*) FROM EXPRESS")
    ((raw_users,),) = run.warehouse("SELECT COUNT(*) FROM USERS")
    ((raw_items,),) = run.warehouse("SELECT COUNT(*) FROM ITEMS")
    ((logged,),) = run.warehouse("SELECT SUM(ROW_COUNT) FROM ARCHIVE_LOG WHERE TABLE_NAME = 'ORDERS'")
    ((days_with_orders,),) = run.tidb(
        f"SELECT COUNT(DISTINCT DATE(created_at)) FROM `{db}`.orders WHERE created_at >= %s AND created_at < %s",
        (start, end),
    )
    assert (raw_orders, raw_express, raw_users, raw_items) == (orders, expresses, users, items)
    assert int(raw_cents) == int(cents)
    assert int(logged) == orders and int(raw_days) == days_with_orders
    stages = run.warehouse(
        f"SELECT TABLE_NAME FROM {run.res.warehouse_database}.INFORMATION_SCHEMA.TABLES "
        "WHERE TABLE_SCHEMA = 'RAW' AND TABLE_NAME LIKE '%__STAGE_%'"
    )
    assert [name for (name,) in stages if "__STAGE_" in name.upper()] == [], "stage tables left behind in RAW"


def test_serving_tables_equal_the_marts(run: Run) -> None:
    run.need("export")
    db, schema = run.res.tidb_database, run.res.warehouse_schema
    as_of = run.last_day + dt.timedelta(days=1)
    for table, mart in SERVING.items():
        ((rows, dates),) = run.tidb(f"SELECT COUNT(*), COUNT(DISTINCT as_of_date) FROM `{db}`.`{table}`")
        ((mart_rows,),) = run.warehouse(f"SELECT COUNT(*) FROM {schema}.{mart}")
        assert rows > 0, f"serving table {table} is empty"
        assert rows == int(mart_rows), f"{table}: {rows} rows in TiDB, {mart_rows} in {schema}.{mart}"
        assert dates == 1
        ((day,),) = run.tidb(f"SELECT MAX(as_of_date) FROM `{db}`.`{table}`")
        assert day == as_of, f"{table} is as of {day}, the transform ran as of {as_of}"
    tiers = dict(run.tidb(f"SELECT item_label, COUNT(*) FROM `{db}`.hot_items GROUP BY item_label"))
    assert set(tiers) == {"high", "low"} and all(n > 0 for n in tiers.values()), tiers
    leftovers = run.tidb(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "AND (table_name LIKE '%%\\_\\_new' OR table_name LIKE '%%\\_\\_old')",
        (db,),
    )
    assert leftovers == [], f"export left {leftovers} behind"


def test_recommendations_serve_each_users_tier(run: Run) -> None:
    steps = run.need("recommend high", "recommend low", "orders", "bill")
    db = run.res.tidb_database
    for label, step in zip(("high", "low"), steps[:2], strict=True):
        table = step.json()
        tier = [
            r[0]
            for r in run.tidb(f"SELECT item_id FROM `{db}`.hot_items WHERE item_label = %s ORDER BY `rank`", (label,))
        ]
        assert [row["item_id"] for row in table["rows"]] == tier
        assert f"labelled '{label}'" in table["note"], table["note"]
    orders = steps[2].json()
    assert orders["rows"] and all(row["express_status"] for row in orders["rows"])
    bills = steps[3].json()
    assert bills["rows"], bills


def test_dashboard_shows_todays_live_orders(run: Run) -> None:
    stream, dashboard = run.need("stream", "dashboard")
    tables = dashboard.json()
    titles = [t["title"] for t in tables]
    assert titles[0] == "Today" and len(tables) == 5, titles
    today = tables[0]["rows"][0]
    streamed = int(stream.stdout.split("streamed ", 1)[1].split(" ", 1)[0])
    assert streamed > 0 and today["order_count"] >= streamed, (today, stream.stdout)
    assert sum(row["order_count"] for row in tables[1]["rows"]) == today["order_count"]
    assert tables[3]["rows"] and tables[4]["rows"], "both hot-item tiers should show"


def test_status_names_both_sides(run: Run) -> None:
    (status,) = run.need("status")
    connections = {row["side"]: row for row in status.json()[0]["rows"]}
    tidb_side, warehouse = connections["TiDB side"]["server"], connections["warehouse"]["server"]
    assert not tidb_side.startswith("unreachable"), tidb_side
    if run.res.targets.snowflake is not None:
        assert warehouse.startswith("Snowflake account"), warehouse
    else:
        assert warehouse == "fakesnow stand-in", warehouse


def test_no_secret_reaches_output_or_files(run: Run) -> None:
    assert run.steps, "nothing ran"
    secret_values = [v for v in targets_mod.secrets(os.environ) if len(v) >= 6]
    printed = [s.stdout + s.stderr for s in run.steps.values()]
    written = [
        p.read_text(errors="ignore")
        for p in run.res.home.rglob("*")
        if p.is_file() and p.suffix in {".log", ".json", ".yml", ".sql", ".txt"}
    ]
    for value in secret_values:
        assert not any(value in text for text in printed), "a secret value was printed by a step"
        assert not any(value in text for text in written), "a secret value was written under the run's home"
