"""A private MariaDB with TLS for tests/test_tls.py: its own CA, server certificate, data directory and port.

Certificates are made with `cryptography`; the server is `mariadb-install-db` + `mariadbd` from the
system's MariaDB packages, started with --no-defaults so nothing of the shared server's configuration
applies. Missing binaries fail the tests with a message: TLS that is never exercised proves nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

USER = "ecom_tls"
DATABASE = "ecom_tls"
START_TIMEOUT = 30.0  # seconds for the server to answer
# where Debian, Fedora and Homebrew put the server binaries; PATH is searched first
_SEARCH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/opt/homebrew/bin"]
)
# small InnoDB files: the data directory is made and thrown away per test module
_SMALL = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M", "--innodb-flush-log-at-trx-commit=0"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_name(path.stem + "-key.pem")
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue(self, dns: list[str], ips: list[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A server certificate for exactly these names (subjectAltName) signed by this authority."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns[0] if dns else ips[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


@dataclass(frozen=True)
class Pki:
    """The files: the CA that signed the server's certificate, an unrelated CA, and two server certificates."""

    ca: Path  # signed server.pem
    other_ca: Path  # a second self-signed CA that signed nothing the server presents
    server_cert: Path  # SAN: DNS localhost, IP 127.0.0.1
    server_key: Path
    foreign_cert: Path  # signed by `ca` too, but only for db.example.internal
    foreign_key: Path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = Authority.create("ecom test CA"), Authority.create("ecom unrelated CA")
    _write(directory / "ca.pem", ca.cert)
    _write(directory / "other-ca.pem", other.cert)
    _write(directory / "server.pem", *ca.issue(["localhost"], ["127.0.0.1"]))
    _write(directory / "foreign.pem", *ca.issue(["db.example.internal"], []))
    return Pki(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        foreign_cert=directory / "foreign.pem",
        foreign_key=directory / "foreign-key.pem",
    )


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name, path=_SEARCH)
        if found:
            return found
    pytest.fail(
        f"the TLS tests need the MariaDB server binaries ({' or '.join(names)} not found): "
        "install mariadb-server (Debian: apt-get install mariadb-server)",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class TlsServer:
    """A running private server: TLS on, a user that must use TLS, and a database it owns."""

    directory: Path
    port: int
    pki: Pki
    password: str
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"
    user: str = USER
    database: str = DATABASE

    @property
    def socket_path(self) -> Path:
        return self.directory / "sock"

    def admin(self) -> pymysql.connections.Connection:
        """root over the Unix socket (no TLS needed there): to set the server up and inspect it."""
        return pymysql.connect(unix_socket=str(self.socket_path), user="root", autocommit=True, connect_timeout=5)

    @contextlib.contextmanager
    def presenting(self, cert: Path, key: Path) -> Iterator[None]:
        """Let the server present another certificate for the block (FLUSH SSL reloads the files)."""
        live_cert, live_key = self.directory / "tls" / "live.pem", self.directory / "tls" / "live-key.pem"
        shutil.copy(cert, live_cert)
        shutil.copy(key, live_key)
        try:
            self._flush_ssl()
            yield
        finally:
            shutil.copy(self.pki.server_cert, live_cert)
            shutil.copy(self.pki.server_key, live_key)
            self._flush_ssl()

    def _flush_ssl(self) -> None:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute("FLUSH SSL")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start() -> TlsServer:
    """Make a data directory and certificates, start mariadbd on a free port, wait (bounded) until it answers,
    then create the REQUIRE SSL user and its database. The caller stops it (TlsServer.stop)."""
    install = _binary("mariadb-install-db", "mysql_install_db")
    server = _binary("mariadbd", "mysqld")
    directory = Path(tempfile.mkdtemp(prefix="ecom-tls-"))  # short: a Unix socket path has ~100 bytes
    try:
        pki = make_pki(directory / "pki")
        live = directory / "tls"
        live.mkdir()
        shutil.copy(pki.server_cert, live / "live.pem")
        shutil.copy(pki.server_key, live / "live-key.pem")
        datadir, user = directory / "data", getpass.getuser()
        made = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={datadir}",
                f"--user={user}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *_SMALL,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if made.returncode != 0:
            pytest.fail(f"mariadb-install-db failed ({made.returncode}): {made.stderr[-2000:]}", pytrace=False)
        port, log = _free_port(), directory / "error.log"
        process = subprocess.Popen(
            [
                server,
                "--no-defaults",
                f"--datadir={datadir}",
                f"--port={port}",
                f"--socket={directory / 'sock'}",
                f"--pid-file={directory / 'mariadbd.pid'}",
                f"--log-error={log}",
                "--bind-address=127.0.0.1",
                f"--user={user}",
                "--skip-name-resolve",
                f"--ssl-ca={pki.ca}",
                f"--ssl-cert={live / 'live.pem'}",
                f"--ssl-key={live / 'live-key.pem'}",
                *_SMALL,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    tls = TlsServer(directory=directory, port=port, pki=pki, password=secrets.token_urlsafe(18), process=process)
    try:
        _wait_until_ready(tls, log)
        conn = tls.admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW VARIABLES LIKE 'have_ssl'")
                have_ssl = cur.fetchone()
                if not have_ssl or have_ssl[1] != "YES":
                    pytest.fail(f"the private server did not enable TLS ({have_ssl}): {_tail(log)}", pytrace=False)
                cur.execute(f"CREATE DATABASE `{DATABASE}`")
                cur.execute(f"CREATE DATABASE `{DATABASE}_express`")
                cur.execute(f"CREATE USER '{USER}'@'%%' IDENTIFIED BY %s REQUIRE SSL", (tls.password,))
                cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO '{USER}'@'%'")
                cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}\\_express`.* TO '{USER}'@'%'")
        finally:
            conn.close()
    except BaseException:
        tls.stop()
        raise
    return tls


def _wait_until_ready(tls: TlsServer, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if tls.process.poll() is not None:
            pytest.fail(f"mariadbd exited with {tls.process.returncode}:\n{_tail(log)}", pytrace=False)
        try:
            tls.admin().close()
            return
        except pymysql.err.MySQLError as exc:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mariadbd did not answer within {START_TIMEOUT:.0f} s ({exc}):\n{_tail(log)}", pytrace=False
                )
            time.sleep(0.1)
