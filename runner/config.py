"""Typed configuration, read from the environment and from the dbt profile (the only two config sources)."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import yaml

from runner.errors import EcomError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
PROFILE_NAME = "ecommerce"
# The account name that switches the fakesnow stand-in on (see profiles.example.yml).
STANDIN_ACCOUNT = "fakesnow"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def identifier(name: str, what: str) -> str:
    """Identifiers cannot be bound as parameters, so the names we format into SQL are checked instead."""
    if not _IDENTIFIER.fullmatch(name):  # fullmatch: `$` alone would let a trailing newline through
        raise EcomError(f"{what} {name!r} is not a valid name", "use letters, digits and underscores only")
    return name


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise EcomError(f"{name}={raw!r} is not a number", f"set {name} to a whole number") from None


def _port(name: str, default: int) -> int:
    port = _env_int(name, default)
    if not 0 < port < 65536:
        raise EcomError(f"{name}={port} is not a TCP port", f"set {name} to a port between 1 and 65535")
    return port


def _host(name: str, default: str) -> str:
    host = os.environ.get(name) or default
    try:
        host.encode("idna")  # what the socket layer does with a name; a name it cannot encode is no host
    except UnicodeError:
        raise EcomError(f"{name}={host!r} is not a host name", f"set {name} to a host name or an IP address") from None
    return host


def _existing_file(name: str) -> str | None:
    path = os.environ.get(name) or None
    if path is not None and not Path(path).is_file():
        raise EcomError(f"{name}={path!r} is not a file", f"point {name} at the CA bundle (PEM) of your TiDB")
    return path


@dataclass(frozen=True)
class TiDBConfig:
    """Where the business data lives: TiDB (or any MySQL-protocol server standing in for it)."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    database: str = "ecommerce"
    express_database: str = "ecommerce_express"
    ssl_ca: str | None = None

    @classmethod
    def from_env(cls) -> TiDBConfig:
        database = identifier(os.environ.get("TIDB_DATABASE") or "ecommerce", "TIDB_DATABASE")
        express = os.environ.get("TIDB_EXPRESS_DATABASE") or f"{database}_express"
        return cls(
            host=_host("TIDB_HOST", "127.0.0.1"),
            port=_port("TIDB_PORT", 3306),
            user=os.environ.get("TIDB_USER") or "root",
            password=os.environ.get("TIDB_PASSWORD", ""),
            database=database,
            express_database=identifier(express, "TIDB_EXPRESS_DATABASE"),
            ssl_ca=_existing_file("TIDB_SSL_CA"),
        )

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class WarehouseConfig:
    """The Snowflake side, read from the dbt profile so dbt and the loaders never disagree."""

    target: str
    account: str
    user: str
    password: str = field(repr=False)
    database: str
    schema: str
    role: str | None = None
    warehouse: str | None = None
    raw_schema: str = "RAW"

    @property
    def is_standin(self) -> bool:
        return self.account == STANDIN_ACCOUNT

    def connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "schema": self.raw_schema,
            "login_timeout": 30,
            "network_timeout": 120,
        }
        if self.role:
            args["role"] = self.role
        if self.warehouse:
            args["warehouse"] = self.warehouse
        return args


@dataclass(frozen=True)
class Settings:
    """Everything a run needs; tests build one with their own databases and home directory."""

    tidb: TiDBConfig
    home: Path
    profiles_dir: Path
    target: str
    timezone: str = "UTC"

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("ECOM_HOME") or PROJECT_ROOT / ".ecom").resolve()
        profiles_dir = Path(os.environ.get("DBT_PROFILES_DIR") or PROJECT_ROOT).resolve()
        settings = cls(
            tidb=TiDBConfig.from_env(),
            home=home,
            profiles_dir=profiles_dir,
            target=os.environ.get("ECOM_TARGET") or "",
            timezone=os.environ.get("ECOM_TIMEZONE") or "UTC",
        )
        settings.zone  # noqa: B018 - validate the time zone early
        return settings

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of tzdata, e.g. "America"
            raise EcomError(
                f"ECOM_TIMEZONE={self.timezone!r} is not a known time zone", "use an IANA name such as UTC"
            ) from None

    def now(self) -> dt.datetime:
        """Wall-clock time in the business time zone, naive (that is how timestamps are stored)."""
        return dt.datetime.now(self.zone).replace(tzinfo=None, microsecond=0)

    def today(self) -> dt.date:
        return self.now().date()

    @property
    def warehouse_dir(self) -> Path:
        return self.home / "warehouse"

    def warehouse(self) -> WarehouseConfig:
        return load_profile(self.profiles_dir, self.target)


def _render(value: Any, env: jinja2.Environment, where: str) -> Any:
    if isinstance(value, str) and "{{" in value:
        try:
            return env.from_string(value).render()
        except EcomError:
            raise
        except Exception as exc:  # a template error, or whatever the expression raised (1/0)
            reason = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else type(exc).__name__
            raise EcomError(
                f"{where} cannot be rendered ({' '.join(reason.split())})", "fix the {{ }} expression"
            ) from None
    return value


def _env_var(name: str, default: str | None = None) -> str:
    """dbt's env_var(): the variable, else the default, else an error naming the variable."""
    if name in os.environ:
        return os.environ[name]
    if default is not None:
        return default
    raise EcomError(f"the dbt profile needs the environment variable {name}", f"export {name}=…")


def load_profile(profiles_dir: Path, target: str = "") -> WarehouseConfig:
    """Read profile `ecommerce` from profiles.yml the way dbt does (env_var() rendered per value)."""
    path = profiles_dir / "profiles.yml"
    if not path.is_file():
        raise EcomError(
            f"no dbt profile at {path}",
            "copy profiles.example.yml to profiles.yml (make does it) or set DBT_PROFILES_DIR",
        )
    try:
        profiles = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise EcomError(f"{path} is not UTF-8 text", "fix the file or copy profiles.example.yml") from None
    except RecursionError:  # thousands of nested brackets
        raise EcomError(
            f"{path} is nested too deeply to be a profile", "fix the file or copy profiles.example.yml"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise EcomError(f"{path} is not valid YAML{where}", "fix the file or copy profiles.example.yml") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    env.globals["env_var"] = _env_var
    profile = (profiles or {}).get(PROFILE_NAME) if isinstance(profiles, dict) else None
    if not isinstance(profile, dict) or not isinstance(profile.get("outputs"), dict):
        raise EcomError(f"{path} has no profile {PROFILE_NAME!r} with outputs", "see profiles.example.yml")
    target = target or str(_render(profile.get("target", "local"), env, f"the target of profile {PROFILE_NAME!r}"))
    output = profile["outputs"].get(target)
    if not isinstance(output, dict):
        known = ", ".join(str(name) for name in profile["outputs"]) or "none"
        raise EcomError(f"profile {PROFILE_NAME!r} has no target {target!r} (targets: {known})", "set ECOM_TARGET")
    values = {key: _render(value, env, f"{key!r} of target {target!r} in {path}") for key, value in output.items()}
    if values.get("type") != "snowflake":
        raise EcomError(f"target {target!r} is of type {values.get('type')!r}", "the warehouse must be snowflake")
    missing = [key for key in ("account", "user", "database", "schema") if not values.get(key)]
    if missing:
        raise EcomError(
            f"target {target!r} in {path} lacks {', '.join(missing)}",
            "set the SNOWFLAKE_* (or SNOWSQL_*) environment variables it reads",
        )
    return WarehouseConfig(
        target=target,
        account=str(values["account"]),
        user=str(values["user"]),
        password=str(values.get("password") or ""),
        database=identifier(str(values["database"]), "warehouse database"),
        schema=identifier(str(values["schema"]), "warehouse schema"),
        role=str(values["role"]) if values.get("role") else None,
        warehouse=str(values["warehouse"]) if values.get("warehouse") else None,
    )
