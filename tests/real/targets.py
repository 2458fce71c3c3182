"""What the real-engine contract suite runs against: read from the same environment variables the runner and
profiles.example.yml read, checked before anything runs, and described without a secret in it.

Resolution, per side:
- TiDB: TIDB_HOST (+ TIDB_PORT, TIDB_USER, TIDB_PASSWORD, TIDB_SSL_CA). Unset, the local default
  (127.0.0.1:3306, root) is used only when stand-ins are allowed. A server that does not answer
  tidb_version() (MariaDB, MySQL) is accepted only when stand-ins are allowed.
- Warehouse: ECOM_TARGET=snowflake with SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER and one sign-in (key pair,
  programmatic access token, external browser, or a password). ECOM_TARGET=local is the fakesnow stand-in.
  ECOM_TARGET unset is the stand-in only when ECOM_REAL_ALLOW_STANDIN=1.
- Stand-ins are allowed by ECOM_REAL_ALLOW_STANDIN=1, or by choosing ECOM_TARGET=local explicitly.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import SECRET_VARIABLES  # every variable whose value must never be printed

STANDIN_SWITCH = "ECOM_REAL_ALLOW_STANDIN"
TIDB_CLOUD_DOMAIN = ".tidbcloud.com"  # as runner/config.py: TLS with the system's CA bundle when no TIDB_SSL_CA
SIGN_IN_HINT = (
    "a Snowflake sign-in: SNOWFLAKE_PRIVATE_KEY_PATH (key pair; + SNOWFLAKE_PRIVATE_KEY_PASSPHRASE if the key is "
    "encrypted), or SNOWFLAKE_AUTHENTICATOR=programmatic_access_token with SNOWFLAKE_TOKEN, or "
    "SNOWFLAKE_AUTHENTICATOR=externalbrowser, or SNOWFLAKE_PASSWORD (discouraged)"
)
_TRUE = {"1", "true", "yes", "on"}


def _first(env: Mapping[str, str], *names: str) -> str:
    """The first of `names` that is set and not empty (the profile's SNOWFLAKE_* then SNOWSQL_* fallbacks)."""
    return next((env[name] for name in names if env.get(name)), "")


@dataclass(frozen=True)
class TiDBTarget:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    ssl_ca: str | None
    explicit: bool  # TIDB_HOST was set; else the local default (stand-ins allowed)

    @property
    def is_tidb_cloud(self) -> bool:
        return self.host.endswith(TIDB_CLOUD_DOMAIN)

    def trust_store(self) -> str | None:
        """The runner's TLS rule (runner/tidb.py): TIDB_SSL_CA when set; a TiDB Cloud host without it, the
        system's CA bundle (else certifi's); any other host without it, plain text."""
        if self.ssl_ca:
            return self.ssl_ca
        if not self.is_tidb_cloud:
            return None
        system = ssl.get_default_verify_paths().cafile
        if system:
            return system
        import certifi

        return str(certifi.where())

    def connect_args(self) -> dict[str, Any]:
        ca = self.trust_store()
        tls: dict[str, Any] = (
            {"ssl_ca": ca, "ssl_verify_cert": True, "ssl_verify_identity": True} if ca else {"ssl_disabled": True}
        )
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": os.fsencode(self.password),  # UTF-8, as the runner sends it
            "charset": "utf8mb4",
            "connect_timeout": 15,
            "autocommit": True,
            **tls,
        }


@dataclass(frozen=True)
class SnowflakeTarget:
    account: str
    user: str
    role: str  # empty: the user's DEFAULT_ROLE
    warehouse: str  # empty: the user's DEFAULT_WAREHOUSE
    schema: str  # dbt's schema (SNOWFLAKE_SCHEMA, default ANALYTICS); RAW is the runner's
    sign_in: str  # how it signs in, for the header: never a secret
    auth_args: dict[str, Any] = field(repr=False)

    def connect_args(self, database: str | None = None, schema: str | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "login_timeout": 60,
            "application": "ecom-htap-contract-suite",
            **self.auth_args,
        }
        for key, value in (("role", self.role), ("warehouse", self.warehouse), ("database", database)):
            if value:
                args[key] = value
        if schema:
            args["schema"] = schema
        return args


@dataclass(frozen=True)
class Targets:
    tidb: TiDBTarget
    snowflake: SnowflakeTarget | None  # None: the fakesnow stand-in
    standin_allowed: bool
    standin_reason: str  # why stand-ins are allowed ("" when they are not)

    @property
    def ecom_target(self) -> str:
        return "snowflake" if self.snowflake else "local"


def _sign_in(env: Mapping[str, str], problems: list[str]) -> tuple[str, dict[str, Any]]:
    """The profile's sign-in rules (profiles.example.yml, runner/config.py): key pair when a key path is set and no
    other authenticator is asked for; else a programmatic access token, the external browser, or a password."""
    authenticator = env.get("SNOWFLAKE_AUTHENTICATOR", "").strip().lower()
    key_path = env.get("SNOWFLAKE_PRIVATE_KEY_PATH", "")
    if authenticator not in ("", "snowflake", "programmatic_access_token", "externalbrowser"):
        problems.append(
            f"SNOWFLAKE_AUTHENTICATOR={authenticator!r} is not one the runner supports "
            "(unset for a key pair or a password, programmatic_access_token, externalbrowser)"
        )
        return "", {}
    if authenticator in ("", "snowflake") and key_path:
        path = Path(key_path).expanduser()
        if not path.is_file():
            problems.append(f"SNOWFLAKE_PRIVATE_KEY_PATH={key_path!r} is not a file (the private key, .p8)")
        passphrase = env.get("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "")
        args: dict[str, Any] = {"private_key_file": str(path)}
        if passphrase:
            args["private_key_file_pwd"] = passphrase
        state = "encrypted, passphrase set" if passphrase else "no passphrase set"
        return f"key pair (SNOWFLAKE_PRIVATE_KEY_PATH={path}, {state})", args
    if authenticator == "programmatic_access_token":
        token = env.get("SNOWFLAKE_TOKEN", "")
        if not token:
            problems.append("SNOWFLAKE_TOKEN (SNOWFLAKE_AUTHENTICATOR=programmatic_access_token needs the token)")
        return "programmatic access token (SNOWFLAKE_TOKEN)", {
            "authenticator": "PROGRAMMATIC_ACCESS_TOKEN",
            "token": token,
        }
    if authenticator == "externalbrowser":
        return "external browser (SSO: someone must complete the sign-in in a browser)", {
            "authenticator": "externalbrowser",
            "client_store_temporary_credential": True,
        }
    password = _first(env, "SNOWFLAKE_PASSWORD", "SNOWSQL_PWD")
    if not password:
        problems.append(SIGN_IN_HINT)
    return "password (discouraged: Snowflake is blocking single-factor passwords for service users)", {
        "password": password
    }


def _tidb(env: Mapping[str, str], standin_allowed: bool, problems: list[str]) -> TiDBTarget:
    host = env.get("TIDB_HOST", "")
    if not host and not standin_allowed:
        problems.append(
            "TIDB_HOST (with TIDB_PORT, TIDB_USER, TIDB_PASSWORD; TIDB_SSL_CA for TLS outside TiDB Cloud): "
            "the TiDB to test"
        )
    raw_port = env.get("TIDB_PORT", "") or "3306"
    try:
        port = int(raw_port)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        problems.append(f"TIDB_PORT={raw_port!r} is not a TCP port")
        port = 3306
    ssl_ca = env.get("TIDB_SSL_CA") or None
    if ssl_ca and not Path(ssl_ca).is_file():
        problems.append(f"TIDB_SSL_CA={ssl_ca!r} is not a file (the CA bundle, PEM)")
    return TiDBTarget(
        host=host or "127.0.0.1",
        port=port,
        user=env.get("TIDB_USER") or "root",
        password=env.get("TIDB_PASSWORD", ""),
        ssl_ca=ssl_ca,
        explicit=bool(host),
    )


def _snowflake(env: Mapping[str, str], problems: list[str]) -> SnowflakeTarget:
    account = _first(env, "SNOWFLAKE_ACCOUNT", "SNOWSQL_ACCOUNT")
    user = _first(env, "SNOWFLAKE_USER", "SNOWSQL_USER")
    if not account:
        problems.append("SNOWFLAKE_ACCOUNT (the account identifier, e.g. myorg-myaccount)")
    if not user:
        problems.append("SNOWFLAKE_USER (e.g. the ECOM_PIPELINE_SVC service user of docs/snowflake-setup.sql)")
    sign_in, auth_args = _sign_in(env, problems)
    return SnowflakeTarget(
        account=account,
        user=user,
        role=_first(env, "SNOWFLAKE_ROLE", "SNOWSQL_ROLE"),
        warehouse=_first(env, "SNOWFLAKE_WAREHOUSE", "SNOWSQL_WAREHOUSE"),
        schema=_first(env, "SNOWFLAKE_SCHEMA", "SNOWSQL_SCHEMA") or "ANALYTICS",
        sign_in=sign_in,
        auth_args=auth_args,
    )


def resolve(env: Mapping[str, str]) -> tuple[Targets | None, list[str]]:
    """The targets the environment names, or what is missing or wrong (every problem at once)."""
    problems: list[str] = []
    ecom_target = env.get("ECOM_TARGET", "")
    switch = env.get(STANDIN_SWITCH, "").strip().lower() in _TRUE
    reason = f"{STANDIN_SWITCH}=1" if switch else ("ECOM_TARGET=local" if ecom_target == "local" else "")
    standin_allowed = bool(reason)
    tidb = _tidb(env, standin_allowed, problems)
    snowflake: SnowflakeTarget | None = None
    if ecom_target == "snowflake":
        snowflake = _snowflake(env, problems)
    elif ecom_target not in ("", "local"):
        problems.append(
            f"ECOM_TARGET={ecom_target!r}: the suite runs the targets of profiles.example.yml, "
            "`snowflake` (a real account) or `local` (the fakesnow stand-in)"
        )
    elif not ecom_target and not standin_allowed:
        problems.append("ECOM_TARGET=snowflake (the warehouse to test)")
        _snowflake(env, problems)  # and name what else the snowflake target would need
    if problems:
        return None, problems
    return Targets(tidb=tidb, snowflake=snowflake, standin_allowed=standin_allowed, standin_reason=reason), []


def missing_message(problems: list[str]) -> str:
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return (
        "the real-engine contract suite cannot run: these settings are missing or wrong:\n"
        f"{lines}\n"
        "It runs the whole pipeline against the TiDB and the Snowflake account they name, in databases of its own "
        "that it drops afterwards (tests/real/README.md).\n"
        f"To exercise it against the local stand-ins (MariaDB/MySQL + fakesnow) on purpose: "
        f"make test-real {STANDIN_SWITCH}=1"
    )


def failed_message(problems: list[str]) -> str:
    """The targets are named, but one of them is not what the suite can run against (see the header above)."""
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return f"the real-engine contract suite cannot run against these targets:\n{lines}"


def secrets(env: Mapping[str, str]) -> list[str]:
    """The secret values in the environment, and the body lines of the private key file (if one is named)."""
    values = [env[name] for name in SECRET_VARIABLES if env.get(name)]
    key_path = env.get("SNOWFLAKE_PRIVATE_KEY_PATH", "")
    if key_path and Path(key_path).expanduser().is_file():
        try:
            text = Path(key_path).expanduser().read_text(encoding="ascii", errors="ignore")
        except OSError:
            text = ""
        values += [line.strip() for line in text.splitlines() if len(line.strip()) >= 16 and "-----" not in line]
    return values


def redact(text: str, secret_values: list[str]) -> str:
    for value in secret_values:
        if value:
            text = text.replace(value, "***")
    return text
