"""`ecom status`: can we reach both sides, how many rows each holds, and when each step last ran."""

from __future__ import annotations

from runner import runs, tidb, tiflash, warehouse
from runner.config import Settings
from runner.errors import EcomError
from runner.serving import Table

TIDB_TABLES = ["users", "items", "orders", "user_labels", "hot_items", "monthly_bills", "monthly_spending"]
WAREHOUSE_TABLES = [
    "RAW.USERS",
    "RAW.ITEMS",
    "RAW.ORDERS",
    "RAW.EXPRESS",
    "RAW.ARCHIVE_LOG",
    "{schema}.DIM_USER_LABELS",
    "{schema}.FCT_WEEKLY_HOT_ITEMS",
    "{schema}.FCT_MONTHLY_BILLS",
    "{schema}.FCT_MONTHLY_SPENDING",
]


def status_tables(settings: Settings) -> list[Table]:
    cfg = settings.tidb
    connections: list[tuple[str, str, str]] = []
    counts: list[tuple[str, str, int | None]] = []
    columnar: list[tuple[str, int, bool, str]] = []
    try:
        flavor = tidb.ping(settings)
        connections.append(("TiDB side", cfg.address, ("TiDB " if flavor.is_tidb else "") + flavor.version))
        with tidb.connection(settings) as conn, conn.cursor() as cur:
            if flavor.is_tidb:
                columnar = [
                    (f"{cfg.database}.{r.table}", r.count, r.available, f"{r.progress:.0%}")
                    for r in tiflash.replicas(conn, cfg)
                ]
            for table in [f"{cfg.database}.{t}" for t in TIDB_TABLES] + [f"{cfg.express_database}.express"]:
                schema, name = table.split(".")
                exists = tidb.scalar(
                    cur,
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                    (schema, name),
                )
                rows = int(tidb.scalar(cur, f"SELECT COUNT(*) FROM `{schema}`.`{name}`")) if exists else None
                counts.append(("TiDB", table, rows))
    except EcomError as exc:
        connections.append(("TiDB side", cfg.address, f"unreachable: {exc}"))
    last_archive = ""
    try:
        with warehouse.session(settings) as wcfg:
            conn = warehouse.connect(wcfg)
            connections.append(
                (
                    "warehouse",
                    f"target {wcfg.target}",
                    "fakesnow stand-in" if wcfg.is_standin else f"Snowflake account {wcfg.account}",
                )
            )
            try:
                cur = conn.cursor()
                for name in WAREHOUSE_TABLES:
                    schema, table = name.format(schema=wcfg.schema).split(".")
                    rows = None
                    if warehouse.table_exists(conn, wcfg, schema, table):
                        cur.execute(f"SELECT COUNT(*) FROM {wcfg.database}.{schema}.{table}")
                        rows = int(cur.fetchone()[0])
                    counts.append(("warehouse", f"{schema}.{table}", rows))
                if warehouse.table_exists(conn, wcfg, wcfg.raw_schema, "ARCHIVE_LOG"):
                    cur.execute("SELECT MIN(ARCHIVE_DATE), MAX(ARCHIVE_DATE), MAX(ARCHIVED_AT) FROM ARCHIVE_LOG")
                    first, last, at = cur.fetchone()
                    last_archive = f"days {first}..{last} in the warehouse, last written {at} UTC" if first else ""
            finally:
                conn.close()
    except EcomError as exc:
        connections.append(("warehouse", settings.target or "default target", f"unavailable: {exc}"))
    steps: list[tuple[str, str, str]] = []
    try:
        last = runs.last_runs(settings)
        for step in ("generate", "stream", "archive", "transform", "export"):
            finished, detail = last.get(step, (None, "never run"))
            steps.append((step, str(finished or "—"), detail))
    except Exception:  # no schema yet: the counts above already say so
        steps.append(("all", "—", "no run log yet (run `ecom init`)"))
    tables = [
        Table("Connections", ["side", "where", "server"], connections),
        Table("Rows", ["side", "table", "rows"], counts, note=last_archive),
        Table("Last runs", ["step", "finished at", "detail"], steps),
    ]
    if columnar:  # only TiDB has TiFlash, and only where replicas were made (TIDB_TIFLASH)
        tables.append(Table("TiFlash replicas", ["table", "replicas", "available", "progress"], columnar))
    return tables
