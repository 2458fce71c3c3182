"""The generated DDL, per server flavor: TiDB-only SQL appears only for TiDB."""

from __future__ import annotations

import dataclasses

import pymysql
import pytest

from runner import tiflash
from runner.config import Settings, TiDBConfig
from runner.errors import EcomError
from runner.tidb import Flavor, connection, migration_files, render_migration
from runner.tidb import init_schema as tidb_init

CFG = TiDBConfig(database="shop", express_database="shop_express")
MARIADB = Flavor(is_tidb=False, version="10.11.19-MariaDB")
TIDB = Flavor(is_tidb=True, version="Release Version: v8.5.1")


def _sql(flavor: Flavor) -> str:
    return "\n;\n".join(stmt for path in migration_files() for stmt in render_migration(path, CFG, flavor))


def test_tidb_gets_auto_random() -> None:
    sql = _sql(TIDB)
    assert "id          BIGINT        NOT NULL AUTO_RANDOM PRIMARY KEY" in sql
    assert "AUTO_INCREMENT" not in sql
    assert "TIFLASH" not in sql  # asked for after the migrations, per TIDB_TIFLASH (runner/tiflash.py)


def test_tiflash_replica_sql_and_progress_query() -> None:
    assert tiflash.replica_statements(CFG) == [
        "ALTER TABLE `shop`.`orders` SET TIFLASH REPLICA 1",
        "ALTER TABLE `shop`.`items` SET TIFLASH REPLICA 1",
    ]
    assert "information_schema.tiflash_replica" in tiflash.progress_query()
    assert "tikv_store_status" not in tiflash.progress_query()  # not supported on TiDB Cloud Starter/Essential


@pytest.mark.parametrize(
    ("code", "message", "cannot"),
    [
        (1105, "the tiflash replica count: 1 should be less than the total tiflash server count: 0", True),
        (8200, "TiFlash is not supported in this cluster tier", True),
        (1142, "ALTER command denied to user 'ecom'@'%' for table 'orders'", False),
        (2013, "Lost connection to MySQL server during query", False),
    ],
)
def test_which_refusals_mean_no_tiflash_here(code: int, message: str, cannot: bool) -> None:
    assert tiflash.cannot_have_replica(pymysql.err.OperationalError(code, message)) is cannot


def test_tiflash_modes_on_a_server_that_is_not_tidb(settings: Settings) -> None:
    with connection(settings) as conn:
        assert tiflash.ensure_replicas(conn, settings.tidb, is_tidb=False) == []  # auto: nothing to ask
        on = dataclasses.replace(settings.tidb, tiflash="on")
        with pytest.raises(EcomError, match="TIDB_TIFLASH=on, but the server is not TiDB"):
            tiflash.ensure_replicas(conn, on, is_tidb=False)


def test_other_servers_get_portable_sql() -> None:
    sql = _sql(MARIADB)
    assert "AUTO_RANDOM" not in sql and "TIFLASH" not in sql
    assert sql.count("AUTO_INCREMENT") == 3


def test_names_are_substituted_and_statements_split() -> None:
    statements = [s for p in migration_files() for s in render_migration(p, CFG, MARIADB)]
    assert all("{{" not in s and "{%" not in s for s in statements)
    assert any(s.startswith("CREATE TABLE IF NOT EXISTS `shop_express`.express") for s in statements)
    views = [s for s in statements if s.startswith("CREATE OR REPLACE VIEW")]
    assert {v.split()[4] for v in views} == {
        "`shop`.recommendations",
        "`shop`.order_tracking",
        "`shop`.today_sales",
        "`shop`.today_sales_by_type",
        "`shop`.today_sales_by_hour",
    }
    assert not any(s.rstrip().endswith(";") for s in statements)


def test_init_applies_each_file_once(settings: Settings) -> None:
    assert tidb_init(settings) == [p.name for p in migration_files()]
    assert tidb_init(settings) == []
    with connection(settings, settings.tidb.database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'user_labels' AND column_name = 'avg_amount'",
            (settings.tidb.database,),
        )
        assert cur.fetchone() == (18, 6)


def test_session_day_is_the_business_day(settings: Settings) -> None:
    """The today_* views use CURRENT_DATE: each session runs in the business time zone."""
    for zone in ("Pacific/Auckland", "Pacific/Pago_Pago", "UTC"):  # UTC+12/13 and UTC-11
        zoned = dataclasses.replace(settings, timezone=zone)
        with connection(zoned) as conn, conn.cursor() as cur:
            cur.execute("SELECT CURRENT_DATE")
            assert cur.fetchone() == (zoned.today(),), zone
