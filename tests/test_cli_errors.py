"""Bad input through the real CLI: one clear line on stderr, a non-zero exit, no traceback, no secret."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from runner import tidb
from runner.config import Settings
from tests.conftest import run_ecom as ecom

SECRET = "Wr0ng-Secret-4711"


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def ready(settings: Settings) -> Settings:
    tidb.init_schema(settings)
    return settings


def test_unreachable_server(settings: Settings) -> None:
    result = ecom(settings, "status", TIDB_HOST="127.0.0.1", TIDB_PORT="1")
    # status reports an unreachable side instead of failing; a command that needs it fails
    assert "unreachable" in result.stdout and result.returncode == 1
    assert_one_clear_line(ecom(settings, "init", TIDB_PORT="1"), "cannot reach TiDB at 127.0.0.1:1", "TIDB_HOST")


def test_missing_tls_ca(settings: Settings) -> None:
    assert_one_clear_line(ecom(settings, "init", TIDB_SSL_CA="/nonexistent/ca.pem"), "TIDB_SSL_CA", "is not a file")


def test_time_zone_the_server_rejects(settings: Settings) -> None:
    result = ecom(settings, "init", ECOM_TIMEZONE="Pacific/Kiritimati")  # UTC+14: beyond MariaDB's range
    if result.returncode == 0:  # MySQL 8 and TiDB accept +14:00
        assert result.stdout.startswith("schema of")
    else:
        assert_one_clear_line(result, "rejects the UTC offset +14:00", "ECOM_TIMEZONE")


def test_wrong_password_is_not_printed(settings: Settings) -> None:
    result = ecom(settings, "init", TIDB_USER="ecom_nobody", TIDB_PASSWORD=SECRET)
    assert_one_clear_line(result, "refused the login", "TIDB_PASSWORD")
    assert SECRET not in result.stdout + result.stderr


def test_unknown_user(ready: Settings) -> None:
    for command in ("recommend", "orders", "bill"):
        assert_one_clear_line(ecom(ready, command, "987654321"), "user 987654321 does not exist")
    result = ecom(ready, "recommend", "not-a-number")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["archive", "--date", "2026-13-45"], "is not a date"),
        (["archive", "--date", "yesterday"], "is not a date"),
        (["archive", "--from", "2026-02-01", "--to", "2026-01-01"], "is after"),
        (["archive", "--from", "2026-02-01"], "go together"),
        (["transform", "--as-of", "31/01/2026"], "is not a date"),
        (["bill", "1", "--month", "2026-13"], "is not a month"),
        (["generate", "--orders", "-3"], "--orders must be between"),
        (["generate", "--days", "1000000000"], "--days must be between 1 and 36,500"),
        (["stream", "--rate", "0"], "--rate must be above 0"),
    ],
)
def test_malformed_arguments(ready: Settings, args: list[str], fragment: str) -> None:
    assert_one_clear_line(ecom(ready, *args), fragment)


def test_today_and_future_days_are_not_archived(ready: Settings) -> None:
    today = ready.today()
    for day in (today, today + dt.timedelta(days=30)):
        assert_one_clear_line(ecom(ready, "archive", "--date", day.isoformat()), "is not over yet")
    assert not (ready.home / "warehouse").exists(), "a refused archive must not touch the warehouse"


def test_empty_warehouse(ready: Settings) -> None:
    assert_one_clear_line(ecom(ready, "transform"), "no archived orders", "ecom archive")
    assert_one_clear_line(ecom(ready, "export"), "no business data", "ecom generate")


def test_missing_and_malformed_profile(ready: Settings, tmp_path: Path) -> None:
    assert_one_clear_line(ecom(ready, "transform", DBT_PROFILES_DIR=str(tmp_path)), "no dbt profile", "profiles.yml")
    (tmp_path / "profiles.yml").write_text("ecommerce: {outputs: [")
    assert_one_clear_line(ecom(ready, "archive", DBT_PROFILES_DIR=str(tmp_path)), "not valid YAML")
    assert_one_clear_line(ecom(ready, "archive", ECOM_TARGET="prod"), "no target 'prod'")


def test_snowflake_credentials_missing(ready: Settings) -> None:
    result = ecom(ready, "transform", ECOM_TARGET="snowflake", SNOWFLAKE_PASSWORD=SECRET)
    assert_one_clear_line(result, "lacks account")
    assert SECRET not in result.stdout + result.stderr
