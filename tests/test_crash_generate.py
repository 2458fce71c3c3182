"""`ecom generate` killed (SIGKILL, through the failpoints) at several points, then rerun: until the swap the
live tables hold what they held before (here: nothing), the load going into `__gen` side tables; after it they
hold the whole dataset; and a rerun gives the data of a clean run of the same seed, row for row (counts,
distinct keys, amounts and row checksums), sweeping what the killed runs left. A generate replacing a whole
dataset is tested in test_generate_whole.py."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loaders import generate as generate_mod
from loaders.generate import GenerateSpec
from runner import tidb
from runner.config import Settings, TiDBConfig
from tests.conftest import drop_databases, env_for, make_settings

pytestmark = pytest.mark.e2e
SPEC = GenerateSpec(users=2_000, items=300, orders=20_000, days=30, seed=23)
# Blocks of a few thousand orders, so this small history loads in several batches (a real run: 200,000).
# The block size shapes the random stream, so the clean reference is generated with the same blocks.
BLOCK_ORDERS = 6_000
CLI_WITH_SMALL_BLOCKS = (
    f"import loaders.generate as g; g.ORDERS_PER_BLOCK = {BLOCK_ORDERS}; from runner.cli import main; main()"
)

# What identifies the generated rows; express status moves with the clock, so only its fixed columns count.
FINGERPRINTS = {
    "users": "id, name, email, city, created_at",
    "items": "id, name, item_type, price, created_at",
    "orders": "id, user_id, item_id, item_count, amount, created_at",
    "express": "id, order_id, carrier, tracking_no",
}
Fingerprint = dict[str, tuple[Any, ...]]


def generate_cli(settings: Settings, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = env_for(settings) | ({"ECOM_FAILPOINT": failpoint} if failpoint else {})
    sizes = [f"--{name}={getattr(SPEC, name)}" for name in ("users", "items", "orders", "days", "seed")]
    return subprocess.run(
        [sys.executable, "-c", CLI_WITH_SMALL_BLOCKS, "generate", *sizes],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def fingerprint(settings: Settings) -> Fingerprint:
    """Per table: rows, distinct keys, a sum and a sum of row checksums; plus orphans and the dataset row."""
    db, express_db = settings.tidb.database, settings.tidb.express_database
    found: Fingerprint = {}
    with tidb.connection(settings, db) as conn, conn.cursor() as cur:
        for table, columns in FINGERPRINTS.items():
            schema = express_db if table == "express" else db
            total = {"orders": "SUM(amount)", "express": "COUNT(DISTINCT order_id)"}.get(table, "0")
            cur.execute(
                f"SELECT COUNT(*), COUNT(DISTINCT id), {total}, COALESCE(SUM(CRC32(CONCAT_WS('|', {columns}))), 0) "
                f"FROM `{schema}`.{table}"
            )
            found[table] = tuple(cur.fetchone() or ())
        cur.execute(
            f"SELECT COUNT(*) FROM `{db}`.orders o LEFT JOIN `{express_db}`.express e ON e.order_id = o.id "
            f"WHERE e.id IS NULL"
        )
        found["orders without express"] = tuple(cur.fetchone() or ())
        cur.execute(f"SELECT seed, users, items, orders, days, first_day, last_day FROM `{db}`.dataset_info")
        found["dataset_info"] = tuple(cur.fetchall())
    return found


def secondary_indexes(settings: Settings) -> set[tuple[str, str, str]]:
    """(table, index, columns) of every non-unique index of the bulk-loaded tables, as the server has them."""
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, index_name, GROUP_CONCAT(column_name ORDER BY seq_in_index SEPARATOR ', ') "
            "FROM information_schema.statistics WHERE table_schema IN (%s, %s) AND non_unique = 1 "
            "AND table_name IN ('orders', 'express', 'users', 'items') GROUP BY table_name, index_name",
            (settings.tidb.database, settings.tidb.express_database),
        )
        return {tuple(row) for row in cur.fetchall()}  # type: ignore[misc]


def leftovers(settings: Settings) -> set[str]:
    """The side (`__gen`) and swapped-out (`__old`) tables present in either database."""
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema IN (%s, %s) "
            "AND (table_name LIKE '%%!_!_gen' ESCAPE '!' OR table_name LIKE '%%!_!_old' ESCAPE '!')",
            (settings.tidb.database, settings.tidb.express_database),
        )
        return {row[0] for row in cur.fetchall()}


def side_rows(settings: Settings, table: str) -> int:
    schema = settings.tidb.express_database if table == "express" else settings.tidb.database
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        return int(tidb.scalar(cur, f"SELECT COUNT(*) FROM `{schema}`.`{table}__gen`"))


def logged_runs(settings: Settings) -> int:
    with tidb.connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        return int(tidb.scalar(cur, "SELECT COUNT(*) FROM pipeline_runs WHERE step = 'generate'"))


@pytest.fixture(scope="module")
def clean(server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fingerprint]:
    """The fingerprint of a clean run of SPEC (in-process, same blocks) in a database of its own."""
    settings = make_settings(server, Path(tmp_path_factory.mktemp("crashgen_ref")), "crashgen_ref")
    tidb.init_schema(settings)
    # generate drops these indexes and builds them after the load: its list must be the schema's
    assert secondary_indexes(settings) == set(generate_mod.SECONDARY_INDEXES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generate_mod, "ORDERS_PER_BLOCK", BLOCK_ORDERS)
        generate_mod.generate(settings, SPEC)
    assert secondary_indexes(settings) == set(generate_mod.SECONDARY_INDEXES), "rebuilt after the load"
    assert leftovers(settings) == set(), "no side or old table stays behind a finished run"
    yield fingerprint(settings)
    drop_databases(settings)


def test_the_clean_run_matches_the_spec(clean: Fingerprint) -> None:
    assert clean["users"][:2] == (SPEC.users, SPEC.users)
    assert clean["items"][:2] == (SPEC.items, SPEC.items)
    assert clean["orders"][:2] == (SPEC.orders, SPEC.orders)
    assert clean["express"][:3] == (SPEC.orders, SPEC.orders, SPEC.orders)  # one shipment per order
    assert clean["orders without express"] == (0,)
    assert len(clean["dataset_info"]) == 1 and clean["dataset_info"][0][:5] == (
        SPEC.seed,
        SPEC.users,
        SPEC.items,
        SPEC.orders,
        SPEC.days,
    )
    assert SPEC.orders > 2 * BLOCK_ORDERS, "the history must load in several batches"


def test_killed_generate_reruns_to_the_clean_data(server: TiDBConfig, tmp_path: Path, clean: Fingerprint) -> None:
    """Killed at each point in turn, each next run starting over what the last one left; then a whole rerun."""
    settings = make_settings(server, tmp_path, "crashgen")
    try:
        tidb.init_schema(settings)
        empty = fingerprint(settings)
        for failpoint in (
            "generate.between_batches",
            "generate.before_dataset_info",
            "generate.before_swap",
            "generate.after_swap",
            "generate.before_run_log",
        ):
            killed = generate_cli(settings, failpoint)
            assert killed.returncode == -signal.SIGKILL, failpoint + killed.stdout[-1500:] + killed.stderr[-1500:]
            live = fingerprint(settings)
            if failpoint == "generate.between_batches":
                assert 0 < side_rows(settings, "orders") <= BLOCK_ORDERS, "killed after the first batch: only it"
                assert side_rows(settings, "express") == side_rows(settings, "orders")
            if failpoint in ("generate.after_swap", "generate.before_run_log"):
                assert live == clean, f"{failpoint}: the swap was done, the data is whole"
            else:
                assert live == empty, f"{failpoint}: until the swap the live tables must hold what they held"
            if failpoint == "generate.after_swap":
                assert {name for name in leftovers(settings) if name.endswith("__old")}, "killed before the drop"
            assert logged_runs(settings) == 0, f"{failpoint}: a killed run must not be logged"

        rerun = generate_cli(settings)
        assert rerun.returncode == 0, rerun.stdout[-1500:] + rerun.stderr[-1500:]
        again = fingerprint(settings)
        for table in FINGERPRINTS:  # nothing lost, nothing doubled: rows == distinct keys == the clean run's
            assert again[table] == clean[table], table
        assert again == clean
        assert secondary_indexes(settings) == set(generate_mod.SECONDARY_INDEXES), "swapped in with every index"
        assert leftovers(settings) == set(), "a rerun sweeps what killed runs left"
        assert logged_runs(settings) == 1
    finally:
        drop_databases(settings)
