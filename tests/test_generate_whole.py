"""A generate replaces the dataset whole or not at all, and no step reads a dataset its completeness record
does not vouch for (issue 10, defects 3 and 4).

Real processes: `ecom` in subprocesses, killed with SIGKILL at the failpoints; the real local server and the
warehouse stand-in. A size this machine cannot hold is refused before anything is touched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from loaders import generate as generate_mod
from loaders.generate import GenerateSpec
from runner import tidb
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError
from tests.conftest import drop_databases, env_for, make_settings
from tests.test_crash_generate import Fingerprint, fingerprint, leftovers

pytestmark = pytest.mark.e2e
FIRST = GenerateSpec(users=300, items=60, orders=3_000, days=10, seed=11)
SECOND = GenerateSpec(users=400, items=80, orders=4_000, days=12, seed=12)
# Blocks of 1,000 orders, so a small history loads in several batches; the references use the same blocks.
BLOCK_ORDERS = 1_000
CLI = f"import loaders.generate as g; g.ORDERS_PER_BLOCK = {BLOCK_ORDERS}; from runner.cli import main; main()"


def ecom(settings: Settings, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = env_for(settings) | ({"ECOM_FAILPOINT": failpoint} if failpoint else {})
    return subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=300)


def generate_args(spec: GenerateSpec) -> list[str]:
    return ["generate", *(f"--{name}={getattr(spec, name)}" for name in ("users", "items", "orders", "days", "seed"))]


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def assert_killed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == -signal.SIGKILL, result.stdout[-2000:] + result.stderr[-2000:]


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints (exit 1, no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def history(settings: Settings, spec: GenerateSpec) -> tuple[str, str]:
    today = settings.today()
    return str(today - dt.timedelta(days=spec.days)), str(today - dt.timedelta(days=1))


def warehouse_state(settings: Settings) -> dict[str, Any]:
    """Every RAW table's rows, sorted (the archive as a whole); {} for no warehouse."""
    path = settings.home / "warehouse" / "ECOMMERCE.db"
    if not path.exists():
        return {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'RAW' ORDER BY 1"
            ).fetchall()
        ]
        return {table: sorted(map(str, con.execute(f"SELECT * FROM RAW.{table}").fetchall())) for table in tables}
    finally:
        con.close()


def generate_runs(settings: Settings) -> list[tuple[Any, ...]]:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute("SELECT started_at, finished_at, detail FROM pipeline_runs WHERE step = 'generate' ORDER BY id")
        return list(cur.fetchall())


def serving_counts(settings: Settings) -> tuple[int, ...]:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        return tuple(
            int(tidb.scalar(cur, f"SELECT COUNT(*) FROM {t}"))
            for t in ("user_labels", "hot_items", "monthly_bills", "monthly_spending")
        )


def tracked_orders(settings: Settings) -> int:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        return int(tidb.scalar(cur, "SELECT COUNT(*) FROM order_tracking WHERE carrier IS NOT NULL"))


@dataclasses.dataclass
class State:
    """What a generate that must not have happened would change."""

    tidb: Fingerprint
    warehouse: dict[str, Any]
    runs: list[tuple[Any, ...]]

    @classmethod
    def of(cls, settings: Settings) -> State:
        return cls(fingerprint(settings), warehouse_state(settings), generate_runs(settings))


def reference(server: TiDBConfig, tmp_path: Path, spec: GenerateSpec) -> Fingerprint:
    """The fingerprint of a clean generate of `spec` (same blocks) in a database of its own."""
    settings = make_settings(server, tmp_path, "whole_ref")
    try:
        tidb.init_schema(settings)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(generate_mod, "ORDERS_PER_BLOCK", BLOCK_ORDERS)
            generate_mod.generate(settings, spec)
        return fingerprint(settings)
    finally:
        drop_databases(settings)


@pytest.fixture
def shop(server: TiDBConfig, tmp_path: Path) -> Iterator[Settings]:
    """A first dataset, generated and archived whole."""
    settings = make_settings(server, tmp_path, "whole")
    try:
        tidb.init_schema(settings)
        assert_ok(ecom(settings, *generate_args(FIRST)))
        first, last = history(settings, FIRST)
        assert_ok(ecom(settings, "archive", "--from", first, "--to", last))
        yield settings
    finally:
        drop_databases(settings)


def test_a_regenerate_killed_before_the_swap_leaves_the_first_dataset_and_its_archive(
    shop: Settings, tmp_path: Path, server: TiDBConfig
) -> None:
    before = State.of(shop)
    assert before.tidb["orders"][0] == FIRST.orders and before.warehouse["ARCHIVE_LOG"]
    for failpoint in ("generate.between_batches", "generate.before_dataset_info", "generate.before_swap"):
        assert_killed(ecom(shop, *generate_args(SECOND), failpoint=failpoint))
        assert State.of(shop) == before, f"killed at {failpoint}: the first dataset, its archive and run log stay"
    assert leftovers(shop), "the killed run's side tables are there to be swept"

    # every step runs on the whole first dataset, as if nothing had happened
    first, last = history(shop, FIRST)
    assert_ok(ecom(shop, "archive", "--from", first, "--to", last))
    verified = ecom(shop, "verify", "--from", first, "--to", last)
    assert_ok(verified)
    assert verified.stdout.strip().endswith("all equal") and f"{FIRST.orders}" in verified.stdout, verified.stdout
    assert_ok(ecom(shop, "transform"))
    assert_ok(ecom(shop, "export"))
    assert all(serving_counts(shop)), "the marts of the first dataset are served"

    assert_ok(ecom(shop, *generate_args(SECOND)))
    assert fingerprint(shop) == reference(server, tmp_path / "ref", SECOND), "exactly the clean second dataset"
    assert leftovers(shop) == set(), "the rerun swept the killed runs' tables"
    assert "ARCHIVE_LOG" not in warehouse_state(shop), "the first dataset's archive went with it"
    assert tracked_orders(shop) == SECOND.orders, "the views read the tables swapped in"
    assert len(generate_runs(shop)) == len(before.runs) + 1


def test_nothing_reads_a_first_generate_killed_mid_load(settings: Settings) -> None:
    tidb.init_schema(settings)
    assert_killed(ecom(settings, *generate_args(FIRST), failpoint="generate.between_batches"))
    assert fingerprint(settings)["orders"][0] == 0, "nothing reached the live tables"
    first, last = history(settings, FIRST)
    for args, says in (
        (("archive", "--from", first, "--to", last), "no business data"),
        (("verify", "--from", first, "--to", last), "no business data"),
        (("transform",), "no archived orders"),  # the warehouse is checked first: it is empty too
        (("export",), "no business data"),
    ):
        line = refusal(ecom(settings, *args))
        assert says in line, line
    assert "ARCHIVE_LOG" not in warehouse_state(settings), "no empty day was filed"
    assert serving_counts(settings) == (0, 0, 0, 0)


def test_a_partial_load_of_an_earlier_version_is_refused_and_a_shops_own_data_is_not(shop: Settings) -> None:
    """What an earlier `generate` left when killed mid-load: rows, no dataset record, secondary indexes dropped.
    The same rows with their indexes and no record are a shop's own TiDB, fed by its apps: accepted."""
    first, last = history(shop, FIRST)
    assert_ok(ecom(shop, "transform"))
    db = f"`{shop.tidb.database}`"
    with tidb.connection(shop, shop.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM {db}.dataset_info")
        cur.execute(f"ALTER TABLE {db}.orders DROP INDEX idx_orders_user_created")
    archived = warehouse_state(shop)
    for args in (
        ("archive", "--from", first, "--to", last),
        ("verify", "--from", first, "--to", last),
        ("transform",),
        ("export",),
    ):
        line = refusal(ecom(shop, *args))
        assert "partial load" in line and "orders.idx_orders_user_created" in line and "ecom generate" in line, line
    assert warehouse_state(shop) == archived
    assert serving_counts(shop) == (0, 0, 0, 0), "nothing was exported"

    with tidb.connection(shop, shop.tidb.database) as conn:
        generate_mod.build_secondary_indexes(conn, shop.tidb.database, shop.tidb.express_database)
    assert_ok(ecom(shop, "archive", "--from", first, "--to", last))
    assert_ok(ecom(shop, "export"))


# Sizes validation accepts that no machine here can hold: refused before anything is touched.
HUGE = [
    pytest.param({"orders": 10**10}, "disk", id="orders-1e10"),
    pytest.param({"users": 10**9}, "", id="users-1e9"),
    pytest.param({"items": 10**9}, "memory", id="items-1e9"),
]


@pytest.mark.parametrize(("size", "short_of"), HUGE)
def test_a_size_the_machine_cannot_hold_is_refused_untouched(
    shop: Settings, size: dict[str, int], short_of: str
) -> None:
    spec = dataclasses.replace(FIRST, seed=99, **size)
    needs = generate_mod.estimate_needs(spec)
    datadir = generate_mod.server_datadir(shop)
    memory = generate_mod.available_memory()
    disk = generate_mod.free_disk(datadir) if datadir else None
    if not generate_mod.fits(needs, memory, disk, datadir):
        pytest.skip(f"this machine has room for {size} (memory {memory}, disk {disk} at {datadir})")
    before = State.of(shop)
    started = time.monotonic()
    line = refusal(ecom(shop, *generate_args(spec)))
    assert time.monotonic() - started < 60, "refused up front, not after generating"
    assert "nothing was changed" in line and "--orders" in line, line
    assert short_of in line and ("memory" in line or "disk" in line), line
    assert State.of(shop) == before, "the dataset, its archive and the run log are untouched"
    assert leftovers(shop) == set(), "not even a side table was made"


def test_a_generate_that_fails_before_the_swap_cleans_up_and_changes_nothing(shop: Settings) -> None:
    """An error (here: the lease lost as the archive is about to be dropped) leaves the first dataset, and no
    side table taking the server's disk until the next generate."""
    before = State.of(shop)

    def lease_lost() -> None:
        raise EcomError("this generate lost its lock", "run it again")

    with pytest.raises(EcomError, match="lost its lock"):
        generate_mod.generate(shop, SECOND, before_swap=lease_lost)
    assert State.of(shop) == before
    assert leftovers(shop) == set()
