"""TLS exercised for real: a private MariaDB with its own CA (tests/tls_server.py) and a user that must use TLS.

Through the runner's own code (runner.tidb.connect/ping, and `python -m runner` in a subprocess):
the right CA gives an encrypted session whose certificate was verified, chain and host name; a wrong CA,
a certificate for another host, plain text to a TLS-only account, a server without TLS and a CA file that
is missing or no CA bundle each fail at once (never retried) with one line saying what to fix, without the
password. TiDB Cloud hosts get verified TLS from the system's CA bundle even without TIDB_SSL_CA.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from runner import retry, tidb
from runner.config import PROJECT_ROOT, Settings, TiDBConfig
from runner.errors import EcomError, TransientError
from tests import tls_server
from tests.conftest import env_for
from tests.tls_server import TlsServer

QUICK = 5.0  # seconds: a failure that is retried waits 1 s or more before its second attempt, and prints a warning


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsServer]:
    server = tls_server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_settings(
    home: Path, cfg: TiDBConfig | None = None, *, server: TlsServer | None = None, ca: Path | str | None = None
) -> Settings:
    """Settings on the private server as its TLS-only user (or on `cfg`), with `ca` as TIDB_SSL_CA."""
    profiles = home / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "profiles.example.yml", profiles / "profiles.yml")
    if server is not None:
        cfg = TiDBConfig(
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            database=server.database,
            express_database=f"{server.database}_express",
        )
    assert cfg is not None
    cfg = dataclasses.replace(cfg, ssl_ca=str(ca) if ca else None)
    return Settings(tidb=cfg, home=home, profiles_dir=profiles, target="local")


def ecom(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI on these settings; TIDB_SSL_CA as the settings say (conftest.env_for leaves it out)."""
    extra = {"TIDB_SSL_CA": settings.tidb.ssl_ca} if settings.tidb.ssl_ca else {}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        env={**env_for(settings), **extra, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess[str], secret: str, *fragments: str) -> str:
    """Exit 1, exactly one line on stderr (`error: …`, no `warning:` of a retry), no traceback, no secret."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert secret not in output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def refused(settings: Settings, *fragments: str) -> EcomError:
    """connect fails at once with a user-fixable error that is not retried: no sleep, one line, no password."""
    sleeps: list[float] = []
    started = time.monotonic()
    with pytest.raises(EcomError) as caught:
        retry.retrying(lambda: tidb.ping(settings), sleep=sleeps.append)  # the steps' own retry loop
    assert not isinstance(caught.value, TransientError) and not retry.is_transient(caught.value)
    assert sleeps == [], "a TLS failure must not be retried"
    assert time.monotonic() - started < QUICK
    message = str(caught.value)
    assert "\n" not in message
    assert not settings.tidb.password or settings.tidb.password not in message
    for fragment in fragments:
        assert fragment in message, message
    return caught.value


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_right_ca_gives_an_encrypted_verified_session(tls: TlsServer, tmp_path: Path, host: str) -> None:
    settings = tls_settings(tmp_path, server=tls, ca=tls.pki.ca)
    settings = dataclasses.replace(settings, tidb=dataclasses.replace(settings.tidb, host=host))
    conn = tidb.connect(settings, tls.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            assert (cur.fetchone() or ("", ""))[1], "the session is not encrypted"
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            assert (cur.fetchone() or ("", ""))[1] in {"TLSv1.2", "TLSv1.3"}
            cur.execute("SELECT CURRENT_USER()")
            assert (cur.fetchone() or ("",))[0] == f"{tls.user}@%"
        sock = conn._sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.context.verify_mode == ssl.CERT_REQUIRED and sock.context.check_hostname
        peer = sock.getpeercert()  # {} unless the certificate was verified against the CA
        assert peer and ("DNS", "localhost") in peer["subjectAltName"], peer
    finally:
        conn.close()
    assert not tidb.ping(settings).is_tidb


def test_cli_status_over_verified_tls(tls: TlsServer, tmp_path: Path) -> None:
    settings = tls_settings(tmp_path, server=tls, ca=tls.pki.ca)
    result = ecom(settings, "status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert tls.password not in result.stdout + result.stderr
    connections = json.loads(result.stdout)[0]["rows"]
    tidb_side = next(row for row in connections if row["side"] == "TiDB side")
    assert tidb_side["where"] == f"{tls.user}@127.0.0.1:{tls.port}" and "MariaDB" in tidb_side["server"], tidb_side


def test_wrong_ca_fails_at_once(tls: TlsServer, tmp_path: Path) -> None:
    settings = tls_settings(tmp_path, server=tls, ca=tls.pki.other_ca)
    refused(settings, "TLS certificate", "does not verify against TIDB_SSL_CA=", "point TIDB_SSL_CA at")
    one_error_line(ecom(settings, "init"), tls.password, "does not verify", "TIDB_SSL_CA")


def test_certificate_for_another_host_fails(tls: TlsServer, tmp_path: Path) -> None:
    settings = tls_settings(tmp_path, server=tls, ca=tls.pki.ca)
    with tls.presenting(tls.pki.foreign_cert, tls.pki.foreign_key):  # signed by the right CA, for another name
        refused(settings, "does not name the host '127.0.0.1'", "TIDB_HOST")
        one_error_line(ecom(settings, "init"), tls.password, "does not name the host", "TIDB_HOST")
    tidb.ping(settings)  # the same settings, the server's own certificate again: fine


def test_plain_text_to_a_tls_only_account(tls: TlsServer, tmp_path: Path) -> None:
    settings = tls_settings(tmp_path, server=tls)  # no TIDB_SSL_CA: plain text, never unverified TLS
    assert tidb.connect_kwargs(settings).get("ssl_disabled") is True
    refused(settings, "refused the login", "require TLS", "TIDB_SSL_CA")
    one_error_line(ecom(settings, "init"), tls.password, "refused the login", "require TLS", "TIDB_SSL_CA")


def test_ca_given_but_server_without_tls(server: TiDBConfig, tls: TlsServer, tmp_path: Path) -> None:
    """The shared test server (conftest `server`): MariaDB as Debian installs it offers no TLS."""
    settings = tls_settings(tmp_path, server, ca=tls.pki.ca)
    conn = pymysql.connect(
        host=server.host, port=server.port, user=server.user, password=server.password, ssl_disabled=True
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW VARIABLES LIKE 'have_ssl'")
            offers_tls = (cur.fetchone() or ("", ""))[1] == "YES"
    finally:
        conn.close()
    if offers_tls:  # a test server with TLS of its own: our private CA did not sign its certificate
        refused(settings, "does not verify against TIDB_SSL_CA=")
    else:
        refused(settings, "does not offer TLS, and TIDB_SSL_CA is set", "unset TIDB_SSL_CA")


def test_missing_ca_file(tls: TlsServer, tmp_path: Path) -> None:
    settings = tls_settings(tmp_path, server=tls)
    result = ecom(settings, "status", TIDB_SSL_CA="/nope")
    one_error_line(result, tls.password, "TIDB_SSL_CA='/nope' is not a file")
    assert result.stdout == ""


def test_ca_file_that_is_no_ca_bundle(tls: TlsServer, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    settings = tls_settings(tmp_path, server=tls)
    for command in ("status", "init"):  # issue 10 saw "unexpected SSLError … report it" here: one line, every command
        one_error_line(ecom(settings, command, TIDB_SSL_CA=str(junk)), tls.password, "TIDB_SSL_CA=", "CA bundle")
    # settings built in code, past the environment's check: connect says the same
    refused(tls_settings(tmp_path, server=tls, ca=junk), "cannot be loaded", "TIDB_SSL_CA")


# --- the connection arguments (no server) ---------------------------------------------------------------


def kwargs_for(tmp_path: Path, host: str, ca: str | None = None) -> dict[str, object]:
    cfg = TiDBConfig(host=host, port=4000, user="u.root", password="pw", ssl_ca=ca)
    return tidb.connect_kwargs(Settings(tidb=cfg, home=tmp_path, profiles_dir=tmp_path, target="local"))


def assert_verified(kwargs: dict[str, object], ca: str) -> None:
    assert kwargs["ssl_ca"] == ca and kwargs["ssl_verify_cert"] is True and kwargs["ssl_verify_identity"] is True
    assert "ssl_disabled" not in kwargs and "ssl" not in kwargs
    conn = pymysql.connections.Connection(defer_connect=True, **kwargs)  # type: ignore[arg-type]
    assert conn.ctx.verify_mode == ssl.CERT_REQUIRED and conn.ctx.check_hostname  # what pymysql makes of them
    assert conn._ssl_required  # no fallback to plain text when the server offers no TLS


@pytest.mark.parametrize(
    "host", ["gateway01.eu-central-1.prod.aws.tidbcloud.com", "Gateway01.US-West-2.prod.aws.TiDBCloud.com."]
)
def test_tidb_cloud_host_gets_verified_tls_from_the_system_bundle(tmp_path: Path, host: str) -> None:
    system = ssl.get_default_verify_paths().cafile
    kwargs = kwargs_for(tmp_path, host)
    assert isinstance(kwargs["ssl_ca"], str) and Path(kwargs["ssl_ca"]).is_file()
    if system:
        assert kwargs["ssl_ca"] == system
    assert_verified(kwargs, kwargs["ssl_ca"])


def test_tidb_cloud_host_without_a_system_bundle_uses_certifi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    paths = ssl.get_default_verify_paths()
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths._replace(cafile=None))
    assert_verified(kwargs_for(tmp_path, "gateway01.ap-southeast-1.prod.aws.tidbcloud.com"), certifi.where())


def test_given_ca_is_verified_on_any_host(tmp_path: Path, tls_ca: str) -> None:
    assert_verified(kwargs_for(tmp_path, "10.0.0.7", tls_ca), tls_ca)
    assert_verified(kwargs_for(tmp_path, "x.tidbcloud.com", tls_ca), tls_ca)  # TIDB_SSL_CA wins


@pytest.mark.parametrize("host", ["127.0.0.1", "db.internal", "tidbcloud.com.example.org", "eviltidbcloud.com"])
def test_other_hosts_without_ca_are_plain_text(tmp_path: Path, host: str) -> None:
    kwargs = kwargs_for(tmp_path, host)
    assert kwargs["ssl_disabled"] is True and "ssl_ca" not in kwargs


@pytest.fixture
def tls_ca(tmp_path: Path) -> str:
    """A CA file without a server (make_pki only writes files)."""
    return str(tls_server.make_pki(tmp_path / "pki").ca)
