"""PostgreSQL over TLS, as Neon serves it: a server with ssl=on, a CA and a server
certificate this test makes, and a pg_hba.conf that refuses anything but TLS.

The server is Debian's PostgreSQL (skipped where it is not installed): pgserver's build, the
embedded default, has no SSL ("FATAL: SSL is not supported by this build").

The URL names the server `db.neo-ray.test` (the certificate's name) and reaches it through
`hostaddr=127.0.0.1`, so it reads as a remote host: neo-ray must add sslmode=require by
itself, verify-full against NEO_DATABASE_CA, and fail with the setting's name, never the
password.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg.conninfo import make_conninfo

from neo_ray.config import load_settings
from neo_ray.errors import ConfigError, DatabaseError
from neo_ray.stores.metadata import Database, ping_url, tls_options

PASSWORD = "tls-secret-" + os.urandom(6).hex()
HOST = "db.neo-ray.test"


@dataclass
class TLSServer:
    port: int
    ca: Path
    other_ca: Path

    def url(self, *, host: str = HOST, password: str = PASSWORD, query: str = "") -> str:
        extra = f"&{query}" if query else ""
        return f"postgresql://neo:{password}@{host}:{self.port}/neo_tls?hostaddr=127.0.0.1{extra}"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:  # a root CA
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        names = [x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_certificates(pgdata: Path, certs: Path) -> None:
    ca_key, other_key, server_key = _key(), _key(), _key()
    ca = _cert("neo-ray test CA", ca_key, None)
    (certs / "ca.pem").write_bytes(_pem(ca))
    (certs / "other-ca.pem").write_bytes(_pem(_cert("another CA", other_key, None)))
    (pgdata / "server.crt").write_bytes(_pem(_cert(HOST, server_key, ("neo-ray test CA", ca_key))))
    key = pgdata / "server.key"
    key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    owner = pgdata.stat()
    for path in (key, pgdata / "server.crt", pgdata / "pg_hba.conf"):
        os.chown(path, owner.st_uid, owner.st_gid)


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _as_postgres(command: list[str]) -> None:
    """Run a PostgreSQL tool as the `postgres` user when we are root (it refuses root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run(prefix + command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{command[0]} failed: {done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TLSServer]:
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip("Debian's PostgreSQL (with SSL) is not installed; pgserver's has no SSL")
    root = Path(tempfile.mkdtemp(prefix="neo-ray-test-pgtls-"))
    root.chmod(0o755)
    certs, pgdata = root / "certs", root / "pg"
    certs.mkdir()
    pgdata.mkdir(mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(pgdata, "postgres", "postgres")
    started = False
    try:
        _as_postgres([str(pg_bin / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres"])
        # Local socket for the fixture's own use; over TCP only TLS, with a password.
        (pgdata / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        )
        _write_certificates(pgdata, certs)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        options = (
            f"-h 127.0.0.1 -p {port} -k {pgdata} -c ssl=on "
            "-c ssl_cert_file=server.crt -c ssl_key_file=server.key"
        )
        log = str(pgdata / "log")
        _as_postgres(
            [str(pg_bin / "pg_ctl"), "-D", str(pgdata), "-w", "-o", options, "-l", log, "start"]
        )
        started = True
        local = f"host={pgdata} port={port} user=postgres dbname=postgres"
        with psycopg.connect(local, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE neo LOGIN PASSWORD '{PASSWORD}'".encode())
            conn.execute(b"CREATE DATABASE neo_tls OWNER neo")
        yield TLSServer(port, certs / "ca.pem", certs / "other-ca.pem")
    finally:
        if started:
            _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def _ssl_in_use(url: str, ca: Path | None = None) -> bool:
    conninfo = make_conninfo(url, **tls_options(url, ca))
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    return bool(row and row[0])


def test_the_server_refuses_plain_connections(tls_server: TLSServer) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(tls_server.url(query="sslmode=disable"), connect_timeout=5).close()


def test_a_remote_url_gets_sslmode_require_by_itself(tls_server: TLSServer) -> None:
    assert tls_options(tls_server.url()) == {"sslmode": "require"}
    assert tls_options("postgresql://u@localhost/db") == {}
    assert tls_options("postgresql://u@h.example/db?sslmode=verify-ca") == {}
    assert _ssl_in_use(tls_server.url())
    settings = load_settings(database_url=tls_server.url(), database_pool_size=1)
    with Database.from_settings(settings) as db:
        assert db.migrate()  # the whole schema, over TLS
        assert db.ping()


def test_verify_full_against_the_configured_ca(tls_server: TLSServer) -> None:
    url = tls_server.url()
    assert tls_options(url, tls_server.ca) == {
        "sslmode": "verify-full",
        "sslrootcert": str(tls_server.ca),
    }
    assert _ssl_in_use(url, tls_server.ca)
    assert ping_url(url, ca=tls_server.ca)
    settings = load_settings(database_url=url, database_ca=str(tls_server.ca))
    with Database.from_settings(settings) as db:
        assert db.ping()


def test_a_wrong_ca_or_host_name_names_the_settings_not_the_password(
    tls_server: TLSServer,
) -> None:
    for url, ca in (
        (tls_server.url(), tls_server.other_ca),
        (tls_server.url(host="other.neo-ray.test"), tls_server.ca),
    ):
        assert not ping_url(url, ca=ca)
        with pytest.raises(DatabaseError) as caught:
            Database.connect(url, ca=ca, timeout_s=2)
        message = str(caught.value)
        assert "NEO_DATABASE_CA" in message and "NEO_DATABASE_URL" in message, message
        assert PASSWORD not in message and "***" in message


def test_a_wrong_password_names_the_url_setting_and_never_prints_a_password(
    tls_server: TLSServer,
) -> None:
    wrong = "not-the-password-" + os.urandom(4).hex()
    with pytest.raises(DatabaseError) as caught:
        Database.connect(tls_server.url(password=wrong), timeout_s=2)
    message = str(caught.value)
    assert "NEO_DATABASE_URL" in message and "password authentication failed" in message
    assert wrong not in message and PASSWORD not in message


def test_a_missing_ca_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NEO_DATABASE_CA"):
        tls_options("postgresql://u@h.example/db", tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="sslmode=disable"):
        tls_options("postgresql://u@h.example/db?sslmode=disable", Path(__file__))
