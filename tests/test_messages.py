"""What the CLI says when things go wrong at the edges: a stream whose connection dropped, a closed pipe,
`ecom dbt` without a command, `archive --json`. Real processes, a real server, real pipes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from loaders.generate import GenerateSpec, generate
from runner import tidb
from runner.config import Settings, TiDBConfig
from tests.conftest import drop_databases, env_for, make_settings
from tests.conftest import run_ecom as ecom
from tests.faultproxy import FaultProxy

# few users with many orders each: a user's order list is longer than a pipe's buffer (64 KiB)
SHOP = GenerateSpec(users=3, items=20, orders=4_000, days=10, seed=6)


@pytest.fixture(scope="module")
def shop(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = make_settings(server, Path(tmp_path_factory.mktemp("messages")), "messages")
    tidb.init_schema(settings)
    generate(settings, SHOP)
    yield settings
    drop_databases(settings)


def start(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        env=env_for(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("lines", [2, 0], ids=["after-two-lines", "before-any"])
@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
def test_a_closed_pipe_is_not_an_error(shop: Settings, json_flag: list[str], lines: int) -> None:
    """`ecom orders 1 | head -2`: the reader goes after two lines, or before the first one is written;
    exit 0, nothing on stderr."""
    db = shop.tidb.database
    with tidb.connection(shop, db) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT user_id, COUNT(*) FROM `{db}`.orders GROUP BY user_id ORDER BY 2 DESC LIMIT 1")
        user, orders = cur.fetchone()
    assert orders >= 800, "the list must outgrow the pipe's buffer, so the write meets the closed pipe"
    run = start(shop, "orders", str(user), "--limit", "1000", *json_flag)
    assert run.stdout is not None
    head = [run.stdout.readline() for _ in range(lines)]
    run.stdout.close()
    err = run.stderr.read() if run.stderr else ""
    assert run.wait(timeout=60) == 0, err
    assert err == "" and all(head), (head, err)


def test_archive_json_is_only_json(shop: Settings) -> None:
    yesterday = shop.today() - dt.timedelta(days=1)
    result = ecom(shop, "archive", "--date", str(yesterday), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("{"), result.stdout[:200]
    assert json.loads(result.stdout)["first_day"] == str(yesterday)


def test_dbt_without_a_command(shop: Settings) -> None:
    result = ecom(shop, "dbt")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "ecom dbt docs generate" in result.stderr, result.stderr
    assert "--project-dir" not in result.stderr
    version = ecom(shop, "dbt", "--version")  # dbt's own options before a command reach dbt as they are
    assert version.returncode == 0 and "installed" in version.stdout, version.stdout + version.stderr


def streamed(settings: Settings, out: str) -> int:
    """The orders the stream says it wrote; the database must hold exactly those, each with its express."""
    count = int(out.split("streamed ")[1].split()[0])
    db, xdb = settings.tidb.database, settings.tidb.express_database
    with tidb.connection(settings, db) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{db}`.orders WHERE created_at >= %s", (settings.today(),))
        assert cur.fetchone()[0] == count
        cur.execute(
            f"SELECT COUNT(*) FROM `{db}`.orders o LEFT JOIN `{xdb}`.express e ON e.order_id = o.id WHERE e.id IS NULL"
        )
        assert cur.fetchone()[0] == 0
    return count


def test_stream_goes_on_after_its_connection_is_killed(settings: Settings) -> None:
    tidb.init_schema(settings)
    generate(settings, GenerateSpec(users=50, items=20, orders=300, days=5, seed=1))
    cfg = settings.tidb
    run = start(settings, "stream", "--duration", "6", "--rate", "8", "--seed", "1")
    killer = pymysql.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password, autocommit=True)
    try:
        time.sleep(2.5)
        with killer.cursor() as cur:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                (cfg.database,),
            )
            sessions = [row[0] for row in cur.fetchall()]
            assert len(sessions) == 1, sessions  # the stream's one connection
            cur.execute(f"KILL {sessions[0]}")
    finally:
        killer.close()
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert err.count("\n") == 1 and err.startswith("warning: the stream lost its connection to TiDB at"), err
    assert streamed(settings, out) >= 8 * 4  # it went on after the drop


def test_stream_that_cannot_reconnect_says_so(settings: Settings, tmp_path: Path) -> None:
    """The server goes away for good (the proxy in front of it stops): a few seconds of reconnecting, then
    one line that says so, and what was streamed is kept."""
    tidb.init_schema(settings)
    generate(settings, GenerateSpec(users=50, items=20, orders=300, days=5, seed=1))
    proxy = FaultProxy(settings.tidb.host, settings.tidb.port).start()
    try:
        env = {**env_for(settings), "TIDB_HOST": "127.0.0.1", "TIDB_PORT": str(proxy.port)}
        run = subprocess.Popen(
            [sys.executable, "-m", "runner", "stream", "--duration", "60", "--rate", "8"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2.5)
    finally:
        proxy.stop()
    started = time.monotonic()
    _, err = run.communicate(timeout=90)
    assert time.monotonic() - started < 30
    lines = err.splitlines()
    assert run.returncode == 1 and len(lines) == 2, err
    assert lines[0].startswith("warning: the stream lost its connection"), err
    assert lines[1].startswith(f"error: the stream lost its connection to TiDB at 127.0.0.1:{proxy.port} and "), err
    assert "could not get it back" in lines[1] and "(0, '')" not in err
    kept = int(lines[1].split("; the ")[1].split()[0])
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT COUNT(*) FROM `{settings.tidb.database}`.orders WHERE created_at >= %s", (settings.today(),)
        )
        assert cur.fetchone()[0] == kept > 0
