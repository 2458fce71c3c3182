from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.config import PROJECT_ROOT, Settings, TiDBConfig, identifier, load_profile
from runner.errors import EcomError, redact


def _profile_dir(tmp_path: Path, text: str) -> Path:
    (tmp_path / "profiles.yml").write_text(text)
    return tmp_path


def test_local_target_is_the_standin(tmp_path: Path) -> None:
    example = (PROJECT_ROOT / "profiles.example.yml").read_text()
    cfg = load_profile(_profile_dir(tmp_path, example), "local")
    assert cfg.is_standin
    assert (cfg.database, cfg.schema, cfg.raw_schema) == ("ECOMMERCE", "ANALYTICS", "RAW")


def test_snowflake_target_reads_env_with_seed_fallbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = (PROJECT_ROOT / "profiles.example.yml").read_text()
    monkeypatch.setenv("SNOWSQL_ACCOUNT", "ab12345.eu-central-1")
    monkeypatch.setenv("SNOWSQL_USER", "loader")
    monkeypatch.setenv("SNOWSQL_PWD", "s3cret")
    monkeypatch.setenv("SNOWFLAKE_USER", "preferred")  # the SNOWFLAKE_* name wins over the seed's name
    monkeypatch.delenv("SNOWFLAKE_ACCOUNT", raising=False)
    cfg = load_profile(_profile_dir(tmp_path, example), "snowflake")
    assert (cfg.account, cfg.user, cfg.password) == ("ab12345.eu-central-1", "preferred", "s3cret")
    assert not cfg.is_standin
    assert "s3cret" not in repr(cfg)


def test_snowflake_target_without_account_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SNOWFLAKE_ACCOUNT", "SNOWSQL_ACCOUNT", "SNOWFLAKE_USER", "SNOWSQL_USER"):
        monkeypatch.delenv(name, raising=False)
    example = (PROJECT_ROOT / "profiles.example.yml").read_text()
    with pytest.raises(EcomError, match="lacks account, user"):
        load_profile(_profile_dir(tmp_path, example), "snowflake")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ecommerce: [unclosed", "not valid YAML"),
        ("other: {}", "no profile 'ecommerce'"),
        ("ecommerce:\n  outputs:\n    local: {type: postgres}\n", "must be snowflake"),
    ],
)
def test_malformed_profiles(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(EcomError, match=message):
        load_profile(_profile_dir(tmp_path, text), "local")


def test_missing_profile_and_unknown_target(tmp_path: Path) -> None:
    with pytest.raises(EcomError, match="no dbt profile"):
        load_profile(tmp_path)
    example = (PROJECT_ROOT / "profiles.example.yml").read_text()
    with pytest.raises(EcomError, match="no target 'prod'"):
        load_profile(_profile_dir(tmp_path, example), "prod")


def test_tidb_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDB_HOST", "gateway01.eu.prod.aws.tidbcloud.com")
    monkeypatch.setenv("TIDB_PORT", "4000")
    monkeypatch.setenv("TIDB_PASSWORD", "pw")
    monkeypatch.setenv("TIDB_DATABASE", "shop")
    monkeypatch.delenv("TIDB_EXPRESS_DATABASE", raising=False)
    cfg = TiDBConfig.from_env()
    assert (cfg.port, cfg.database, cfg.express_database) == (4000, "shop", "shop_express")
    assert "pw" not in repr(cfg)
    monkeypatch.setenv("TIDB_PORT", "four thousand")
    with pytest.raises(EcomError, match="TIDB_PORT"):
        TiDBConfig.from_env()


@pytest.mark.parametrize("name", ["a-b", "x; DROP DATABASE y", "", "1abc", "a" * 65, "naïve"])
def test_identifiers_are_checked(name: str) -> None:
    with pytest.raises(EcomError):
        identifier(name, "TIDB_DATABASE")


def test_unknown_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOM_TIMEZONE", "Mars/Olympus")
    with pytest.raises(EcomError, match="not a known time zone"):
        Settings.from_env()


def test_redact() -> None:
    assert redact("login failed for pw=hunter2", ["hunter2", ""]) == "login failed for pw=***"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TIDB_TIFLASH", "maybe", "TIDB_TIFLASH='maybe' is not one of auto, on, off"),
        ("ECOM_LOCK_LEASE_SECONDS", "0", "ECOM_LOCK_LEASE_SECONDS=0 is out of range"),
        ("ECOM_MAX_TRANSACTION_SECONDS", "7200", "ECOM_MAX_TRANSACTION_SECONDS=7200 is out of range"),
        ("ECOM_MAX_TRANSACTION_SECONDS", "ten", "ECOM_MAX_TRANSACTION_SECONDS='ten' is not a number"),
        ("TIDB_READ_TIMEOUT_SECONDS", "0", "TIDB_READ_TIMEOUT_SECONDS=0 is out of range"),
        ("TIDB_LONG_STATEMENT_SECONDS", "86401", "TIDB_LONG_STATEMENT_SECONDS=86401 is out of range"),
    ],
)
def test_production_settings_are_checked(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(EcomError, match=re.escape(message)):
        Settings.from_env()


def test_statement_timeout_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = _profile_dir(tmp_path, (PROJECT_ROOT / "profiles.example.yml").read_text())
    monkeypatch.setenv("ECOM_STATEMENT_TIMEOUT_SECONDS", "900")
    assert load_profile(example, "local").connect_args()["session_parameters"] == {"STATEMENT_TIMEOUT_IN_SECONDS": 900}
    monkeypatch.setenv("ECOM_STATEMENT_TIMEOUT_SECONDS", "-1")
    with pytest.raises(EcomError, match="ECOM_STATEMENT_TIMEOUT_SECONDS"):
        load_profile(example, "local")


def test_tidb_read_bounds_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDB_READ_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("TIDB_LONG_STATEMENT_SECONDS", raising=False)
    cfg = TiDBConfig.from_env()
    assert (cfg.read_timeout_seconds, cfg.long_statement_seconds) == (30, 3600)
    monkeypatch.setenv("TIDB_READ_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("TIDB_LONG_STATEMENT_SECONDS", "600")
    cfg = TiDBConfig.from_env()
    assert (cfg.read_timeout_seconds, cfg.long_statement_seconds) == (5, 600)
