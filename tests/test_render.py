"""Data is data: names from the database reach the terminal as text, never as rich markup, emoji codes or
terminal control. Through the real CLI on a real database holding hostile names."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaders.generate import GenerateSpec, generate
from runner import tidb
from runner.config import Settings, TiDBConfig
from tests.conftest import drop_databases, make_settings
from tests.conftest import run_ecom as ecom

# name in the database -> how a table shows it
HOSTILE = {
    "[bold]x[/bold]": "[bold]x[/bold]",
    "[/]": "[/]",
    "[link=http://e]y[/link]": "[link=http://e]y[/link]",
    ":x:": ":x:",
    "\x1b[2J\x1b[31mred": r"\x1b[2J\x1b[31mred",
    "a\nb": r"a\nb",
    "\u202eevil": r"\u202eevil",
    "\x07\x08\r": r"\x07\x08\r",
}
HOSTILE_TYPE = ("[red]t\x7f", r"[red]t\x7f")  # DEL
HOSTILE_CARRIER = ("\x9b31mC1\u2066", r"\x9b31mC1\u2066")  # a C1 CSI, a bidi isolate
USER = 1
# what a terminal would act on: C0 (bar the line ends), DEL, C1, bidi embeddings/overrides/isolates
UNSHOWABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A small generated shop whose items 1..8 have hostile names, each ordered today by USER and each on
    both hot-item tiers."""
    settings = make_settings(server, Path(tmp_path_factory.mktemp("render")), "render")
    tidb.init_schema(settings)
    generate(settings, GenerateSpec(users=50, items=20, orders=300, days=10, seed=3))
    db, xdb, now = settings.tidb.database, settings.tidb.express_database, settings.now()
    with tidb.connection(settings, db) as conn, conn.cursor() as cur:
        for item_id, name in enumerate(HOSTILE, start=1):
            cur.execute(f"UPDATE `{db}`.items SET name = %s WHERE id = %s", (name, item_id))
            cur.execute(
                f"INSERT INTO `{db}`.orders (user_id, item_id, item_count, amount, created_at) "
                "VALUES (%s, %s, 1, 9.5, %s)",
                (USER, item_id, now),
            )
            cur.execute(
                f"INSERT INTO `{xdb}`.express (order_id, carrier, tracking_no, status, updated_at) "
                "VALUES (%s, %s, 'T1', 'created', %s)",
                (cur.lastrowid, HOSTILE_CARRIER[0], now),
            )
            for tier in ("high", "low"):
                cur.execute(
                    f"INSERT INTO `{db}`.hot_items VALUES (%s, %s, %s, 5, %s, 9.5, 'toys', 1, %s, %s, %s, %s)",
                    (tier, item_id, item_id, name, now.date(), now.date(), now.date(), now),
                )
        cur.execute(f"UPDATE `{db}`.items SET item_type = %s WHERE id = 1", (HOSTILE_TYPE[0],))
        conn.commit()
    yield settings
    drop_databases(settings)


def assert_shown_literally(result: subprocess.CompletedProcess[str], *shown: str) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "MarkupError" not in result.stdout + result.stderr and "error" not in result.stderr, result.stderr
    assert "\x1b" not in result.stdout, "a raw escape sequence reached the terminal"
    assert not UNSHOWABLE.findall(result.stdout), UNSHOWABLE.findall(result.stdout)
    for text in shown:
        assert text in result.stdout, (text, result.stdout)


@pytest.mark.parametrize("command", [["orders", str(USER), "--limit", "50"], ["dashboard"], ["recommend", str(USER)]])
def test_hostile_names_are_printed_literally(shop: Settings, command: list[str]) -> None:
    extra = {
        "orders": [HOSTILE_TYPE[1], HOSTILE_CARRIER[1]],
        "dashboard": [HOSTILE_TYPE[1]],  # today's sales by item type
        "recommend": [],
    }[command[0]]
    assert_shown_literally(ecom(shop, *command), *HOSTILE.values(), *extra)


@pytest.mark.parametrize("command", [["orders", str(USER), "--limit", "50"], ["dashboard"], ["recommend", str(USER)]])
def test_json_keeps_the_exact_names(shop: Settings, command: list[str]) -> None:
    result = ecom(shop, *command, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.isascii(), "JSON escapes every non-ASCII character (\\uXXXX), control ones included"
    tables = json.loads(result.stdout)
    names = {row.get("item_name") for t in (tables if isinstance(tables, list) else [tables]) for row in t["rows"]}
    assert set(HOSTILE) <= names


def test_error_lines_show_escapes(shop: Settings) -> None:
    """A hostile value echoed in an error message (here dbt's, and click's) is made visible there too."""
    dbt = ecom(shop, "dbt", "\x1b[2Jfoo\u202e")
    assert dbt.returncode == 1 and dbt.stderr.count("\n") == 1, dbt.stderr
    assert r"\x1b[2Jfoo\u202e" in dbt.stderr and not UNSHOWABLE.findall(dbt.stderr), dbt.stderr
    usage = ecom(shop, "status", "--\x1b[31m")
    assert usage.returncode == 2 and r"--\x1b[31m" in usage.stderr and "\x1b" not in usage.stderr, usage.stderr
