"""Snowflake sign-in as Snowflake wants it now: key pair (the default), programmatic access token, browser;
a password still works with a warning. Proven with a real RSA key and the real connector: a local HTTP
server in the place of the account's login endpoint captures what the connector sends, and the test checks
the JWT it signed with our key (decrypted with the passphrase) against the public key."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import snowflake.connector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runner import warehouse
from runner.config import (
    ACCESS_TOKEN,
    BROWSER,
    KEY_PAIR,
    PASSWORD,
    PROJECT_ROOT,
    Settings,
    TiDBConfig,
    load_profile,
)
from runner.errors import EcomError
from tests.conftest import run_ecom

PASSPHRASE = "correct horse battery staple"
ENV_NAMES = (
    "SNOWFLAKE_ACCOUNT",
    "SNOWFLAKE_USER",
    "SNOWFLAKE_PASSWORD",
    "SNOWSQL_PWD",
    "SNOWFLAKE_PRIVATE_KEY_PATH",
    "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
    "SNOWFLAKE_AUTHENTICATOR",
    "SNOWFLAKE_TOKEN",
    "ECOM_STATEMENT_TIMEOUT_SECONDS",
)


@dataclass
class Key:
    private: rsa.RSAPrivateKey
    encrypted_path: Path
    plain_path: Path

    @property
    def der(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def fingerprint(self) -> str:
        """Snowflake's RSA_PUBLIC_KEY_FP: SHA-256 of the DER public key, base64."""
        public = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "SHA256:" + base64.b64encode(hashlib.sha256(public).digest()).decode()

    def pem_lines(self) -> list[str]:
        """Every line of key material in both files: none may appear in any output."""
        lines = []
        for path in (self.encrypted_path, self.plain_path):
            lines += [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]
        return lines


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    folder = tmp_path_factory.mktemp("keys")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encrypted = folder / "rsa_key.p8"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    plain = folder / "rsa_key_plain.p8"
    plain.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Key(private, encrypted, plain)


@dataclass
class LoginCapture:
    """Snowflake's login endpoint, played locally: records each login request and refuses it."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def login() -> Iterator[LoginCapture]:
    capture = LoginCapture()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip" or body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            capture.requests.append({"path": self.path, "body": json.loads(body)})
            answer = json.dumps(
                {
                    "success": False,
                    "code": "390100",
                    "message": "Incorrect username or password was specified.",
                    "data": None,
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    capture.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield capture
    server.shutdown()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SNOWFLAKE_ACCOUNT", "ab12345")
    monkeypatch.setenv("SNOWFLAKE_USER", "ecom_svc")
    return monkeypatch


def _example(tmp_path: Path) -> Path:
    (tmp_path / "profiles.yml").write_text((PROJECT_ROOT / "profiles.example.yml").read_text())
    return tmp_path


def _capture_profile(tmp_path: Path, port: int) -> Path:
    """The example's snowflake target, pointed at the capture server (host/port/protocol, as for PrivateLink)."""
    text = (PROJECT_ROOT / "profiles.example.yml").read_text()
    text = text.replace(
        "      threads: 4\n", f"      threads: 4\n      host: 127.0.0.1\n      port: {port}\n      protocol: http\n"
    )
    (tmp_path / "profiles.yml").write_text(text)
    return tmp_path


def _login_body(capture: LoginCapture, before: int) -> dict[str, Any]:
    logins = [r for r in capture.requests[before:] if r["path"].startswith("/session/v1/login-request")]
    assert logins, f"the connector sent no login request ({capture.requests[before:]})"
    return logins[-1]["body"]["data"]


def test_key_pair_is_the_default_and_the_key_is_decrypted(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, key: Key
) -> None:
    clean_env.setenv("SNOWFLAKE_PRIVATE_KEY_PATH", str(key.encrypted_path))
    clean_env.setenv("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", PASSPHRASE)
    cfg = load_profile(_example(tmp_path), "snowflake")
    args = cfg.connect_args()
    assert cfg.auth == KEY_PAIR
    # as the connector documents: the key decrypted, as DER (PKCS#8) bytes, no password, no passphrase
    assert args["private_key"] == key.der
    assert "password" not in args and "private_key_file_pwd" not in args and "authenticator" not in args
    assert "network_timeout" not in args and args["login_timeout"] > 0
    assert PASSPHRASE not in repr(cfg) and "private_key" not in repr(cfg)


def test_the_connector_signs_its_login_with_our_key(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, key: Key, login: LoginCapture
) -> None:
    clean_env.setenv("SNOWFLAKE_PRIVATE_KEY_PATH", str(key.encrypted_path))
    clean_env.setenv("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", PASSPHRASE)
    clean_env.setenv("ECOM_STATEMENT_TIMEOUT_SECONDS", "5400")
    cfg = load_profile(_capture_profile(tmp_path, login.port), "snowflake")
    before = len(login.requests)
    with pytest.raises(snowflake.connector.errors.DatabaseError):
        snowflake.connector.connect(**cfg.connect_args())
    data = _login_body(login, before)
    assert data["AUTHENTICATOR"] == "SNOWFLAKE_JWT"
    assert data["LOGIN_NAME"] == "ecom_svc" and data["ACCOUNT_NAME"] == "ab12345"
    claims = jwt.decode(data["TOKEN"], key.private.public_key(), algorithms=["RS256"])  # signature checked
    assert claims["iss"] == f"AB12345.ECOM_SVC.{key.fingerprint}"
    assert claims["sub"] == "AB12345.ECOM_SVC"
    assert data["SESSION_PARAMETERS"]["STATEMENT_TIMEOUT_IN_SECONDS"] == 5400
    assert "PASSWORD" not in data


def test_programmatic_access_token_and_browser(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, login: LoginCapture
) -> None:
    clean_env.setenv("SNOWFLAKE_AUTHENTICATOR", "programmatic_access_token")
    clean_env.setenv("SNOWFLAKE_TOKEN", "pat-secret-123")
    cfg = load_profile(_capture_profile(tmp_path, login.port), "snowflake")
    assert cfg.auth == ACCESS_TOKEN and "pat-secret-123" not in repr(cfg)
    before = len(login.requests)
    with pytest.raises(snowflake.connector.errors.DatabaseError):
        snowflake.connector.connect(**cfg.connect_args())
    data = _login_body(login, before)
    assert (data["AUTHENTICATOR"], data["TOKEN"]) == ("PROGRAMMATIC_ACCESS_TOKEN", "pat-secret-123")

    clean_env.setenv("SNOWFLAKE_AUTHENTICATOR", "externalbrowser")
    cfg = load_profile(_example(tmp_path), "snowflake")
    assert cfg.auth == BROWSER
    assert cfg.connect_args()["authenticator"] == "externalbrowser"


def test_password_still_works_with_one_warning(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("SNOWFLAKE_PASSWORD", "pw-secret-456")
    cfg = load_profile(_example(tmp_path), "snowflake")
    assert cfg.auth == PASSWORD and cfg.connect_args()["password"] == "pw-secret-456"
    clean_env.setattr(warehouse, "_warned_password", False)
    with caplog.at_level("WARNING", logger="ecom"):
        warehouse._warn_if_password(cfg)
        warehouse._warn_if_password(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ecom"]
    assert len(warnings) == 1 and "SNOWFLAKE_PRIVATE_KEY_PATH" in warnings[0]
    assert "pw-secret-456" not in warnings[0]


def test_no_sign_in_at_all_is_a_clear_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(EcomError, match="no way to sign in") as caught:
        load_profile(_example(tmp_path), "snowflake")
    assert "SNOWFLAKE_PRIVATE_KEY_PATH" in caught.value.fix


def test_a_long_statement_is_stopped_by_the_server_with_a_message() -> None:
    """No client-side cancel timer (no network_timeout); the server's limit ends a statement with 000630."""
    exc = snowflake.connector.errors.ProgrammingError(
        msg="Statement reached its statement or warehouse timeout of 5400 second(s) and was canceled.",
        errno=630,
        sqlstate="57014",
    )
    explained = warehouse.explain(exc)
    assert explained is not None and "ECOM_STATEMENT_TIMEOUT_SECONDS" in str(explained)
    assert warehouse.explain(snowflake.connector.errors.ProgrammingError(msg="syntax error", errno=1003)) is None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "does not exist"),
        ("wrong passphrase", "cannot be decrypted with the passphrase"),
        ("no passphrase", "is encrypted and no passphrase is set"),
        ("malformed", "is not a PEM private key"),
    ],
)
def test_bad_keys_are_one_clear_line_through_the_cli(
    tmp_path: Path, key: Key, login: LoginCapture, case: str, message: str
) -> None:
    bad = tmp_path / "bad.p8"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    env = {
        "SNOWFLAKE_ACCOUNT": "ab12345",
        "SNOWFLAKE_USER": "ecom_svc",
        "SNOWFLAKE_PRIVATE_KEY_PATH": {"missing file": str(tmp_path / "nope.p8"), "malformed": str(bad)}.get(
            case, str(key.encrypted_path)
        ),
        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": {"wrong passphrase": "not-it-789", "no passphrase": ""}.get(
            case, PASSPHRASE
        ),
    }
    home = tmp_path / "home"
    settings = Settings(
        tidb=TiDBConfig(database="ecomt_keys_unused", express_database="ecomt_keys_unused_express"),
        home=home,
        profiles_dir=_capture_profile(tmp_path, login.port),
        target="snowflake",
    )
    result = run_ecom(settings, "transform", **env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "SNOWFLAKE_PRIVATE_KEY" in lines[0] or "private_key_path" in lines[0]
    printed = result.stdout + result.stderr
    for secret in [PASSPHRASE, "not-it-789", *key.pem_lines()]:
        assert secret not in printed


def test_a_key_and_another_authenticator_at_once_is_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, key: Key
) -> None:
    """dbt would sign in with the key whatever the authenticator says; the runner must not differ from it."""
    clean_env.setenv("SNOWFLAKE_PRIVATE_KEY_PATH", str(key.plain_path))
    clean_env.setenv("SNOWFLAKE_AUTHENTICATOR", "PROGRAMMATIC_ACCESS_TOKEN")  # as Snowflake writes it
    clean_env.setenv("SNOWFLAKE_TOKEN", "pat-secret-123")
    with pytest.raises(EcomError, match="both private_key_path and authenticator 'programmatic_access_token'"):
        load_profile(_example(tmp_path), "snowflake")
