"""Secrets (issue #3, item 8): passwords and tokens never appear in what the runner prints, logs, raises or
leaves on disk, on a successful run or a failing one.

A real MariaDB user with a distinctive password owns the test's databases; the dbt profile reads two more
distinctive secrets from the environment (the warehouse password and a key passphrase). The CLI runs as
subprocesses, as a user runs it; afterwards stdout, stderr, every file under the run's ECOM_HOME (dbt's
logs and target/ artifacts, the warehouse files) and the TiDB run log are searched for every secret.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pymysql
import pytest

from runner.config import Settings, TiDBConfig
from tests.conftest import drop_databases, env_for, make_settings

TAG = uuid.uuid4().hex[:10]
TIDB_SECRET = f"TiDB-pw-{TAG}-Qx7!z"
WAREHOUSE_SECRET = f"Snow-pw-{TAG}-Kv9#y"
PASSPHRASE_SECRET = f"Key-phrase-{TAG}-Wm3%x"
LITERAL_SECRET = f"Literal-pw-{TAG}-Jd5&w"  # written into a broken profile, never in the environment
WRONG_CLOSE = TIDB_SECRET[:-1] + ("y" if TIDB_SECRET[-1] != "y" else "q")  # one character changed
WRONG_OTHER = f"Wrong-pw-{TAG}-Hp2@v"
SECRETS = [TIDB_SECRET, WAREHOUSE_SECRET, PASSPHRASE_SECRET, LITERAL_SECRET, WRONG_CLOSE, WRONG_OTHER]
USER = f"ecomt_sec_{TAG}"

# The stand-in target with its password and a key passphrase read from the environment, as a real
# account's would be (dbt renders them; the stand-in ignores them).
PROFILE = """
ecommerce:
  target: local
  outputs:
    local:
      type: snowflake
      account: fakesnow
      user: local
      password: "{{ env_var('SNOWFLAKE_PASSWORD') }}"
      private_key_passphrase: "{{ env_var('SNOWFLAKE_PRIVATE_KEY_PASSPHRASE') }}"
      role: LOCAL
      warehouse: LOCAL_WH
      database: ECOMMERCE
      schema: ANALYTICS
      threads: 1
    snowflake:
      type: snowflake
      account: "{{ env_var('SNOWFLAKE_ACCOUNT', '') }}"
      user: "{{ env_var('SNOWFLAKE_USER', '') }}"
      password: "{{ env_var('SNOWFLAKE_PASSWORD', '') }}"
      database: ECOMMERCE
      schema: ANALYTICS
"""


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # dbt colours its output: a colour code must not hide a secret


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str


@dataclass
class Secured:
    settings: Settings
    env: dict[str, str]
    runs: list[Run]

    def ecom(self, *args: str, **overrides: str) -> Run:
        result = subprocess.run(
            [sys.executable, "-m", "runner", *args],
            env={**self.env, **overrides},
            capture_output=True,
            text=True,
            timeout=240,
            cwd=self.settings.home,  # anything written relative to the working directory lands in the home
        )
        out, err = ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)
        run = Run(tuple(args), result.returncode, out, err)
        self.runs.append(run)
        return run


def _root(cfg: TiDBConfig) -> pymysql.connections.Connection:
    return pymysql.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password, autocommit=True)


@pytest.fixture
def secured(server: TiDBConfig, tmp_path: Path) -> Iterator[Secured]:
    """The test's databases owned by a user of their own with a distinctive password (dropped afterwards)."""
    base = make_settings(server, tmp_path / "home", "sec")
    (base.profiles_dir / "profiles.yml").write_text(PROFILE)
    settings = replace(base, tidb=replace(base.tidb, user=USER, password=TIDB_SECRET))
    conn = _root(server)
    try:
        with conn.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (USER, host, TIDB_SECRET))
                for db in (settings.tidb.database, settings.tidb.express_database):
                    cur.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO %s@%s", (USER, host))
        env = {
            **env_for(settings),
            "SNOWFLAKE_PASSWORD": WAREHOUSE_SECRET,
            "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": PASSPHRASE_SECRET,
        }
        yield Secured(settings, env, [])
    finally:
        try:
            drop_databases(base)  # as root
        finally:
            with conn.cursor() as cur:
                for host in ("%", "localhost"):
                    cur.execute("DROP USER IF EXISTS %s@%s", (USER, host))
            conn.close()


def assert_no_secret(secured: Secured) -> None:
    """No secret in anything printed, nor in any file of the home, nor in the TiDB run log."""
    for run in secured.runs:
        for secret in SECRETS:
            assert secret not in run.out, (secret, run.args, "stdout")
            assert secret not in run.err, (secret, run.args, "stderr")
    files = [p for p in secured.settings.home.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, (secret, str(path))
    s = secured.settings
    conn = _root(replace(s.tidb, user="root", password=""))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                (s.tidb.database, "pipeline_runs"),
            )
            if cur.fetchone()[0]:
                cur.execute(f"SELECT CONCAT_WS(' ', step, detail) FROM `{s.tidb.database}`.pipeline_runs")
                log = " ".join(row[0] for row in cur.fetchall())
                assert not [secret for secret in SECRETS if secret in log]
    finally:
        conn.close()


def assert_one_error_line(run: Run, *fragments: str) -> None:
    assert run.code != 0, run
    assert "Traceback" not in run.out + run.err, run
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run
    assert not lines[0].startswith("error: unexpected"), run
    for fragment in fragments:
        assert fragment in lines[0], run


def test_a_successful_pipeline_leaks_nothing(secured: Secured) -> None:
    today = dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=9), today - dt.timedelta(days=1)
    steps = [
        ("init",),
        ("generate", "--users=40", "--items=8", "--orders=400", "--days=9", "--seed=5"),
        ("archive", f"--from={first}", f"--to={last}"),
        ("transform",),
        ("export",),
        ("verify",),
        ("dbt", "debug"),  # prints the profile it uses
        ("dashboard",),
        ("status", "--json"),
    ]
    for args in steps:
        run = secured.ecom(*args)
        assert run.code == 0, run
    status = json.loads(secured.runs[-1].out)
    assert status[0]["rows"][0]["where"] == f"{USER}@{secured.settings.tidb.host}:{secured.settings.tidb.port}"
    assert "Connection test: [OK connection ok]" in secured.runs[6].out, secured.runs[
        6
    ]  # dbt debug reached the warehouse
    for command in ("recommend", "orders", "bill"):
        assert secured.ecom(command, "1", "--json").code == 0, secured.runs[-1]
    home = secured.settings.home
    artifacts = {p.name for p in (home / "dbt").rglob("*") if p.is_file()}
    assert {"manifest.json", "run_results.json", "dbt.log"} <= artifacts  # the files searched below exist
    assert (home / "warehouse" / "ECOMMERCE.db").is_file()
    assert_no_secret(secured)


def test_failing_runs_leak_nothing(secured: Secured, tmp_path: Path) -> None:
    assert secured.ecom("init").code == 0  # as the secured user: the schema exists for the runs below
    # wrong passwords: one character off, and another distinctive one
    assert_one_error_line(secured.ecom("init", TIDB_PASSWORD=WRONG_CLOSE), "refused the login")
    assert_one_error_line(
        secured.ecom("archive", f"--date={dt.date(2020, 1, 1)}", TIDB_PASSWORD=WRONG_OTHER), "refused the login"
    )
    assert_one_error_line(secured.ecom("recommend", "1", TIDB_PASSWORD=WRONG_OTHER), "refused the login")
    # an unreachable server, also with the debug traceback on
    assert_one_error_line(secured.ecom("init", TIDB_PORT="1"), "cannot reach TiDB")
    debug = secured.ecom("orders", "1", TIDB_PORT="1", ECOM_DEBUG="1")
    assert debug.code != 0 and "cannot reach TiDB" in debug.err, debug
    status = secured.ecom("status", TIDB_PORT="1")
    assert status.code == 1 and "unreachable" in status.out, status
    # the warehouse target that lacks an account, with its password set
    assert_one_error_line(secured.ecom("transform", ECOM_TARGET="snowflake"), "lacks account")
    # broken profiles that hold a password literally (a template that does not parse, YAML that does not,
    # a target of the wrong type, and a password that lands in a bad database name)
    broken = {
        "template": PROFILE.replace("{{ env_var('SNOWFLAKE_PASSWORD') }}", LITERAL_SECRET + "{{ oops"),
        "yaml": PROFILE.replace("\"{{ env_var('SNOWFLAKE_PASSWORD') }}\"", '"' + LITERAL_SECRET),
        "type": PROFILE.replace("type: snowflake", "type: postgres").replace(
            "{{ env_var('SNOWFLAKE_PASSWORD') }}", LITERAL_SECRET
        ),
        "undefined": PROFILE.replace("{{ env_var('SNOWFLAKE_PASSWORD') }}", LITERAL_SECRET + "{{ no_such_name }}"),
    }
    expected = {
        "template": "cannot be rendered",
        "yaml": "not valid YAML",
        "type": "postgres",
        "undefined": "no_such_name",
    }
    for name, text in broken.items():
        folder = tmp_path / f"profile_{name}"
        folder.mkdir()
        (folder / "profiles.yml").write_text(text)
        assert_one_error_line(secured.ecom("archive", DBT_PROFILES_DIR=str(folder)), expected[name])
        assert_one_error_line(secured.ecom("transform", DBT_PROFILES_DIR=str(folder)), expected[name])
    # a dbt command that fails inside dbt, on the secured profile
    failed = secured.ecom("dbt", "run-operation", "no_such_macro_anywhere")
    assert failed.code == 1 and "Traceback" not in failed.out + failed.err, failed
    assert failed.err.strip().startswith("error: dbt run-operation"), failed
    assert_no_secret(secured)


def test_the_searches_would_find_a_secret(secured: Secured) -> None:
    """The search is not vacuous: a secret printed or left in a file of the home is found."""
    secured.runs.append(Run(("echo",), 0, f"password={TIDB_SECRET}", ""))
    with pytest.raises(AssertionError):
        assert_no_secret(secured)
    secured.runs.clear()
    (secured.settings.home / "dbt").mkdir(parents=True, exist_ok=True)
    (secured.settings.home / "dbt" / "leak.log").write_text(f"connect(password={WAREHOUSE_SECRET!r})")
    with pytest.raises(AssertionError):
        assert_no_secret(secured)
    shutil.rmtree(secured.settings.home / "dbt")
    assert_no_secret(secured)
