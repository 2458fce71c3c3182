"""Typed configuration, read from the environment and from the dbt profile (the only two config sources)."""

from __future__ import annotations

import datetime as dt
import os
import re
import ssl
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
# Hosts under this domain are TiDB Cloud endpoints (gateway01.<region>.prod.aws.tidbcloud.com, ...).
TIDB_CLOUD_DOMAIN = ".tidbcloud.com"
TIFLASH_MODES = ("auto", "on", "off")  # TIDB_TIFLASH (runner/tiflash.py)
DEFAULT_READ_TIMEOUT_SECONDS = 30  # TIDB_READ_TIMEOUT_SECONDS
DEFAULT_LONG_STATEMENT_SECONDS = 3600  # TIDB_LONG_STATEMENT_SECONDS
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


def _bounded_int(name: str, default: int, low: int, high: int) -> int:
    value = _env_int(name, default)
    if not low <= value <= high:
        raise EcomError(f"{name}={value} is out of range", f"set {name} to a number from {low} to {high}")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or default).strip().lower()
    if value not in choices:
        raise EcomError(f"{name}={value!r} is not one of {', '.join(choices)}", f"set {name} to one of them")
    return value


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
    """A CA bundle: a readable file holding at least one PEM certificate, so a wrong path fails here, in one
    line naming the variable, and not later as a TLS failure that looks like the server's."""
    path = os.environ.get(name) or None
    if path is None:
        return None
    if not Path(path).is_file():
        raise EcomError(f"{name}={path!r} is not a file", f"point {name} at the CA bundle (PEM) of your TiDB")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError):  # no certificate in it, not PEM
        reason = "no PEM certificate in it"
    except OSError as exc:  # unreadable
        reason = exc.strerror or type(exc).__name__
    else:
        return path
    raise EcomError(
        f"{name}={path!r} cannot be read as a CA bundle ({reason})", f"point {name} at the CA bundle (PEM) of your TiDB"
    )


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
    tiflash: str = "auto"  # TiFlash replicas of the analysis tables: auto, on or off (runner/tiflash.py)
    # the longest the server may send nothing while a statement runs (or the handshake): past it the connection
    # is given up as dead (a hung server, a stalled proxy) and the step retried
    read_timeout_seconds: int = DEFAULT_READ_TIMEOUT_SECONDS
    # the same for the statements that are silent by design until they finish (runner.tidb.patient): DDL,
    # LOAD DATA, full-table aggregates
    long_statement_seconds: int = DEFAULT_LONG_STATEMENT_SECONDS

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
            tiflash=_choice("TIDB_TIFLASH", "auto", TIFLASH_MODES),
            read_timeout_seconds=_bounded_int("TIDB_READ_TIMEOUT_SECONDS", DEFAULT_READ_TIMEOUT_SECONDS, 1, 86400),
            long_statement_seconds=_bounded_int(
                "TIDB_LONG_STATEMENT_SECONDS", DEFAULT_LONG_STATEMENT_SECONDS, 1, 86400
            ),
        )

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def is_tidb_cloud(self) -> bool:
        """TiDB Cloud's public endpoints accept TLS only, so they get TLS even without TIDB_SSL_CA."""
        return self.host.lower().rstrip(".").endswith(TIDB_CLOUD_DOMAIN)


# How the runner signs in to Snowflake, as the profile says (dbt-snowflake reads the same fields).
KEY_PAIR, ACCESS_TOKEN, BROWSER = "key pair", "programmatic access token", "browser"
PASSWORD, STANDIN = "password", "stand-in"
_AUTHENTICATORS = ("snowflake", "programmatic_access_token", "externalbrowser")  # those the runner supports
# Snowflake's own default (STATEMENT_TIMEOUT_IN_SECONDS) is two days; a statement of ours past this limit is
# ended by the server with a clear error rather than left to queue or run unseen.
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 4 * 3600
LOGIN_TIMEOUT_SECONDS = 60


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
    auth: str = PASSWORD
    private_key: bytes | None = field(default=None, repr=False)  # DER (PKCS#8), decrypted
    token: str = field(default="", repr=False)
    statement_timeout_seconds: int = DEFAULT_STATEMENT_TIMEOUT_SECONDS
    # where the account answers, when not at <account>.snowflakecomputing.com (PrivateLink, a proxy)
    host: str | None = None
    port: int | None = None
    protocol: str | None = None

    @property
    def is_standin(self) -> bool:
        return self.account == STANDIN_ACCOUNT

    @property
    def secrets(self) -> list[str]:
        """What must never reach a log or a message (drivers may echo their arguments)."""
        return [self.password, self.token]

    def connect_args(self) -> dict[str, Any]:
        """The connector's arguments, as snowflake-connector-python documents them for each sign-in.

        No `network_timeout`: the 4.x connector arms a cancel timer with it on every `execute`, so a COPY or
        a publish that queues or runs longer would be cancelled. Signing in is bounded by `login_timeout`;
        a statement by the server's STATEMENT_TIMEOUT_IN_SECONDS, which ends it with an error we name.
        """
        args: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "database": self.database,
            "schema": self.raw_schema,
            "login_timeout": LOGIN_TIMEOUT_SECONDS,
            "application": "ecom-htap",
            "session_parameters": {"STATEMENT_TIMEOUT_IN_SECONDS": self.statement_timeout_seconds},
        }
        if self.auth == KEY_PAIR:
            args["private_key"] = self.private_key
        elif self.auth == ACCESS_TOKEN:
            args["authenticator"] = "PROGRAMMATIC_ACCESS_TOKEN"
            args["token"] = self.token
        elif self.auth == BROWSER:
            args["authenticator"] = "externalbrowser"
            args["client_store_temporary_credential"] = True  # one browser sign-in per session, not per connection
        else:
            args["password"] = self.password
        for name in ("role", "warehouse", "host", "port", "protocol"):
            if getattr(self, name):
                args[name] = getattr(self, name)
        return args


def private_key_der(path: str, passphrase: str, target: str) -> bytes:
    """The key-pair sign-in's private key, decrypted with `passphrase`, as DER (PKCS#8) bytes: the form
    snowflake-connector-python documents for `private_key`. Errors name the setting, never the key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    where = f"private_key_path of target {target!r} ({path})"
    try:
        data = Path(path).read_bytes()  # as dbt-snowflake opens it: no ~ expansion (the shell does that)
    except FileNotFoundError:
        raise EcomError(f"{where} does not exist", "set SNOWFLAKE_PRIVATE_KEY_PATH to your key file (.p8)") from None
    except OSError as exc:
        raise EcomError(f"{where} cannot be read ({exc.strerror})", "check the file and its permissions") from None
    encrypted = b"ENCRYPTED" in data
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError:  # a passphrase for a plain key, or none for an encrypted one
        if encrypted:
            raise EcomError(
                f"{where} is encrypted and no passphrase is set", "set SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"
            ) from None
        raise EcomError(
            f"{where} is not encrypted but a passphrase is set", "unset SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"
        ) from None
    except ValueError:
        if encrypted:
            raise EcomError(
                f"{where} cannot be decrypted with the passphrase set", "check SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"
            ) from None
        raise EcomError(
            f"{where} is not a PEM private key",
            "point it at the PKCS#8 key made by `openssl genrsa 2048 | openssl pkcs8 -topk8 -v2 aes256`",
        ) from None
    except Exception:  # an unsupported algorithm or a key the library rejects: nothing of it is echoed
        raise EcomError(f"{where} cannot be loaded as a private key", "make a new RSA key pair") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise EcomError(f"{where} is not an RSA or EC key", "Snowflake key-pair sign-in takes an RSA key")
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _sign_in(values: dict[str, Any], target: str, path: Path) -> dict[str, Any]:
    """How the target signs in, as WarehouseConfig fields; dbt-snowflake reads the same profile fields."""
    if str(values.get("account")) == STANDIN_ACCOUNT:
        return {"auth": STANDIN}
    authenticator = str(values.get("authenticator") or "").lower()
    key_path = str(values.get("private_key_path") or "")
    if authenticator and authenticator not in _AUTHENTICATORS:
        raise EcomError(
            f"authenticator {authenticator!r} of target {target!r} is not one the runner supports",
            "use key pair (private_key_path), programmatic_access_token or externalbrowser",
        )
    if values.get("private_key"):
        raise EcomError(
            f"target {target!r} in {path} gives the key inline (private_key)", "give private_key_path instead"
        )
    if key_path and authenticator in ("programmatic_access_token", "externalbrowser"):
        raise EcomError(
            f"target {target!r} sets both private_key_path and authenticator {authenticator!r}",
            "unset one: dbt would sign in with the key and the runner with the other",
        )
    if authenticator in ("", "snowflake") and key_path:
        passphrase = str(values.get("private_key_passphrase") or "")
        return {"auth": KEY_PAIR, "private_key": private_key_der(key_path, passphrase, target)}
    if authenticator == "programmatic_access_token":
        if not values.get("token"):
            raise EcomError(
                f"target {target!r} signs in with a programmatic access token but has none", "set SNOWFLAKE_TOKEN"
            )
        return {"auth": ACCESS_TOKEN, "token": str(values["token"])}
    if authenticator == "externalbrowser":
        return {"auth": BROWSER}
    if not values.get("password"):
        raise EcomError(
            f"target {target!r} in {path} has no way to sign in",
            "set SNOWFLAKE_PRIVATE_KEY_PATH (key pair), or SNOWFLAKE_AUTHENTICATOR=programmatic_access_token with "
            "SNOWFLAKE_TOKEN, or SNOWFLAKE_AUTHENTICATOR=externalbrowser",
        )
    return {"auth": PASSWORD}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs; tests build one with their own databases and home directory."""

    tidb: TiDBConfig
    home: Path
    profiles_dir: Path
    target: str
    timezone: str = "UTC"
    # how long a run's lock outlives a run that stopped renewing it (runner/lease.py)
    lock_lease_seconds: int = 60
    # the longest a TiDB snapshot (transaction) may stay open: TiDB Cloud Starter ends one at 30 minutes
    max_transaction_seconds: int = 600

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
            lock_lease_seconds=_bounded_int("ECOM_LOCK_LEASE_SECONDS", 60, 2, 3600),
            max_transaction_seconds=_bounded_int("ECOM_MAX_TRANSACTION_SECONDS", 600, 10, 1800),
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
        statement_timeout_seconds=_bounded_int(  # up to 604800 s, Snowflake's maximum (7 days)
            "ECOM_STATEMENT_TIMEOUT_SECONDS", DEFAULT_STATEMENT_TIMEOUT_SECONDS, 1, 604800
        ),
        host=str(values["host"]) if values.get("host") else None,
        port=int(values["port"]) if str(values.get("port") or "").isdigit() else None,
        protocol=str(values["protocol"]) if values.get("protocol") else None,
        **_sign_in(values, target, path),
    )
