"""Shared fixtures: every test run gets its own TiDB databases and its own warehouse files.

Tests talk to the real MySQL-protocol server named by TIDB_* (default 127.0.0.1:3306) and to the fakesnow
stand-in. When the server cannot be reached the run stops with a clear message: it never skips silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pymysql
import pytest

from loaders.generate import GenerateSpec
from runner import pipeline, tidb
from runner.config import PROJECT_ROOT, Settings, TiDBConfig
from runner.errors import EcomError
from tests.faultproxy import FaultProxy

os.environ.setdefault("DO_NOT_TRACK", "1")


def _base_tidb() -> TiDBConfig:
    try:
        return TiDBConfig.from_env()
    except EcomError as exc:
        pytest.exit(f"bad TiDB settings for the tests: {exc}", returncode=1)


@pytest.fixture(scope="session")
def server() -> TiDBConfig:
    cfg = _base_tidb()
    try:
        pymysql.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password, connect_timeout=5).close()
    except pymysql.err.MySQLError as exc:
        pytest.exit(
            f"the tests need a MySQL-protocol server at {cfg.host}:{cfg.port} and cannot reach it "
            f"({type(exc).__name__}): run `make tidb` or set TIDB_HOST/TIDB_PORT/TIDB_USER/TIDB_PASSWORD",
            returncode=1,
        )
    return cfg


def make_settings(server: TiDBConfig, home: Path, name: str) -> Settings:
    """Settings with unique database names and a private home (warehouse files, dbt target, profile)."""
    database = f"ecomt_{name}_{uuid.uuid4().hex[:8]}"
    profiles = home / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "profiles.example.yml", profiles / "profiles.yml")
    tidb = TiDBConfig(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        database=database,
        express_database=f"{database}_express",
        ssl_ca=server.ssl_ca,
    )
    return Settings(tidb=tidb, home=home, profiles_dir=profiles, target="local")


def drop_databases(settings: Settings) -> None:
    cfg = settings.tidb
    conn = pymysql.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{cfg.database}`")
            cur.execute(f"DROP DATABASE IF EXISTS `{cfg.express_database}`")
    finally:
        conn.close()


@pytest.fixture
def settings(server: TiDBConfig, tmp_path: Path) -> Iterator[Settings]:
    s = make_settings(server, tmp_path, "fn")
    yield s
    drop_databases(s)


def env_for(settings: Settings) -> dict[str, str]:
    """The environment a CLI subprocess needs to act on these settings."""
    cfg = settings.tidb
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDB_", "ECOM_", "SNOWFLAKE_", "SNOWSQL_"))}
    env.update(
        TIDB_HOST=cfg.host,
        TIDB_PORT=str(cfg.port),
        TIDB_USER=cfg.user,
        TIDB_PASSWORD=cfg.password,
        TIDB_DATABASE=cfg.database,
        TIDB_EXPRESS_DATABASE=cfg.express_database,
        ECOM_HOME=str(settings.home),
        DBT_PROFILES_DIR=str(settings.profiles_dir),
        ECOM_TARGET=settings.target,
        DO_NOT_TRACK="1",
    )
    return env


def run_ecom(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, on these settings, with `env` on top."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        env={**env_for(settings), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@contextlib.contextmanager
def through_proxy(settings: Settings) -> Iterator[tuple[Settings, FaultProxy]]:
    """`settings` reached through a fault-injecting TCP proxy (tests/faultproxy.py) in front of the real server,
    and the proxy: switch its mode (stall, delay, cut, ...) to make the network fail."""
    proxy = FaultProxy(settings.tidb.host, settings.tidb.port).start()
    try:
        yield replace(settings, tidb=replace(settings.tidb, host="127.0.0.1", port=proxy.port)), proxy
    finally:
        proxy.stop()


@pytest.fixture
def proxied(settings: Settings) -> Iterator[tuple[Settings, FaultProxy]]:
    """`through_proxy` for a test's own settings. The `settings` fixture's own teardown goes to the server
    directly, so it works whatever the proxy was left doing."""
    with through_proxy(settings) as pair:
        yield pair


@contextlib.contextmanager
def generated_shop(
    server: TiDBConfig, tmp_path_factory: pytest.TempPathFactory, name: str, spec: GenerateSpec
) -> Iterator[Settings]:
    """A module's own shop: its databases with the schema and a history generated for `spec`; dropped after."""
    settings = make_settings(server, Path(tmp_path_factory.mktemp(name)), name)
    tidb.init_schema(settings)
    pipeline.run_generate(settings, spec)
    try:
        yield settings
    finally:
        drop_databases(settings)
