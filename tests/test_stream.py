"""`ecom stream` until Ctrl-C: whole ticks only, each order with its express row, shipments moving on."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from loaders.generate import GenerateSpec, generate
from runner import tidb
from runner.config import Settings
from tests.conftest import env_for


def test_stream_until_interrupted(settings: Settings) -> None:
    tidb.init_schema(settings)
    generate(settings, GenerateSpec(users=300, items=50, orders=2_000, days=10, seed=2))
    xdb = settings.tidb.express_database
    with tidb.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT MAX(updated_at) FROM `{xdb}`.express")
        (generated_until,) = cur.fetchone()
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "stream", "--rate", "8", "--seed", "1"],
        env=env_for(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in out + err
    streamed = int(out.split("streamed ")[1].split()[0])
    assert streamed >= 8
    db = settings.tidb.database
    with tidb.connection(settings, db) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{db}`.orders WHERE created_at >= %s", (settings.today(),))
        assert cur.fetchone()[0] == streamed
        cur.execute(
            f"SELECT COUNT(*) FROM `{db}`.orders o LEFT JOIN `{xdb}`.express e ON e.order_id = o.id WHERE e.id IS NULL"
        )
        assert cur.fetchone()[0] == 0, "every order has its express row"
        cur.execute(
            f"SELECT COUNT(*) FROM `{xdb}`.express WHERE status <> 'created' AND updated_at > %s", (generated_until,)
        )
        assert cur.fetchone()[0] > 0, "shipments moved forward during the stream"
