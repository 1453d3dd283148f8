"""Issue 8's connector and secret findings, each against real servers: secret references only from the
allow-list (5), verified TLS unless ``insecure`` (6), no secret in any error (7), no privileged role in
the catalog (8), accounts that never collide and SCIM users never matched by email (15)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import ipaddress
import threading
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from access.connectors import ConnectorError, PermanentError, RetryableError, Target
from activities.connectors import check_config
from activities.connectors.base import ConnectorBase
from activities.connectors.ldap import LdapConnector
from activities.connectors.postgres import PostgresConnector
from activities.connectors.scim import ScimConnector
from activities.connectors.secrets import secret, secret_policy, use_secret_policy
from activities.targets import as_activity_error
from harness.ldap import SLAPD, LdapServer
from harness.ports import free_port
from harness.postgres import PostgresServer
from starter.services.org import checked_connector
from store.org import OrgError, OrgFile

# --- 5. Secret references only from the allow-listed env prefix and the secrets directory -----------------


class _Catcher(http.server.BaseHTTPRequestHandler):
    """An "outside host": records every Authorization header it is sent."""

    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        self.send_response(401)
        self.end_headers()

    def log_message(self, *args: Any) -> None: ...


@pytest.fixture
def outside_host() -> Iterator[str]:
    _Catcher.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Catcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/scim/v2"
    server.shutdown()
    server.server_close()


def test_f5_secret_file_outside_the_secrets_dir_is_refused_up_front_and_at_use(
    secrets_dir: Path, outside_host: str
) -> None:
    app_key = secrets_dir.parent / "secret.key"  # Lapse's own Fernet key, in the data dir
    app_key.write_text("the-apps-own-fernet-key")
    for reference in (str(app_key), "../secret.key", "/etc/passwd"):
        config = {"base_url": outside_host, "token_file": reference, "insecure": True}
        with pytest.raises(ValidationError, match=r"(?s)token_file.*not inside the secrets directory"):
            check_config("scim", config)
        with pytest.raises(OrgError, match=r"integration evil: config.token_file: .*secrets directory"):
            OrgFile.model_validate({"integrations": [{"name": "evil", "kind": "scim", "config": config}]}).check(
                connectors=checked_connector
            )

    # A reference that was fine when stored, then made a symlink out of the directory: refused at use.
    connector = ScimConnector({"base_url": outside_host, "token_file": "scim-token", "insecure": True})
    (secrets_dir / "scim-token").symlink_to(app_key)
    with pytest.raises(PermanentError, match="token_file refused: scim-token is not inside the secrets directory"):
        connector.test_connection()
    assert _Catcher.seen == []  # the outside host never saw the key

    # Files inside the directory (a symlink within it too) are read.
    (secrets_dir / "real-token").write_text("integration-token\n")
    (secrets_dir / "alias").symlink_to(secrets_dir / "real-token")
    for name in ("real-token", "alias", str(secrets_dir / "real-token")):
        with pytest.raises(PermanentError, match="refused the bearer token"):
            ScimConnector({"base_url": outside_host, "token_file": name, "insecure": True}).test_connection()
    assert _Catcher.seen == ["Bearer integration-token"] * 3


@pytest.mark.parametrize(
    "name",
    [
        "LAPSE_SECRET_KEY",
        "lapse_secret_key",
        "LAPSE_DATABASE_URL",
        "LAPSE_TEMPORAL_API_KEY",
        "LAPSE_CODEC_KEY",
        "LAPSE_CODEC_KEY_FILE",
        "LAPSE_AUDIT_KEY",
        "LAPSE_TEMPORAL_TLS_KEY",
        "LAPSE_SECRETS_DIR",
        "HOME",
        "AWS_SECRET_ACCESS_KEY",
    ],
)
def test_f5_env_reference_outside_the_prefix_or_to_lapses_own_settings_is_refused(
    name: str, outside_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, "do-not-send-me")
    for kind, config in (
        ("scim", {"base_url": outside_host, "token_env": name, "insecure": True}),
        ("postgres", {"dsn_env": name}),
        ("ldap", {"url": "ldaps://ldap.invalid", "bind_dn": "cn=x", "password_env": name, "users_base": "o=x"}),
    ):
        if kind == "ldap":
            config["groups_base"] = "o=x"
        with pytest.raises(ValidationError, match=rf"{'dsn' if kind == 'postgres' else '(token|password)'}_env"):
            check_config(kind, config)

    # Stored before the rule existed: refused when the worker would resolve it, naming the field.
    connector = ScimConnector({"base_url": outside_host, "token_env": "LAPSE_OK_TOKEN", "insecure": True})
    object.__setattr__(connector.config, "token_env", name)
    with pytest.raises(PermanentError, match=f"token_env refused: {name}"):
        connector.test_connection()
    assert _Catcher.seen == []


def test_f5_the_documented_references_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LAPSE_PG_PROD_DSN", "LAPSE_DEMO_PG_DSN", "LAPSE_TEST_PG_DSN"):
        check_config("postgres", {"dsn_env": name})
        monkeypatch.setenv(name, "postgresql://lapse@db/orders")
        assert secret(env=name, file=None, what="the DSN", field="dsn") == "postgresql://lapse@db/orders"


def test_f5_integration_hosts_keep_targets_and_their_secrets_on_known_hosts(
    secrets_dir: Path, outside_host: str, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_PG_PROD_DSN", postgres.dsn(password="the-prod-password"))
    # Stored while any host was allowed: a SCIM "app" on an outside host, handed the PostgreSQL DSN as token.
    scim = ScimConnector({"base_url": outside_host, "token_env": "LAPSE_PG_PROD_DSN", "insecure": True})
    pg = PostgresConnector({"dsn_env": "LAPSE_PG_PROD_DSN", "insecure": True})
    policy = secret_policy()
    use_secret_policy(dataclasses.replace(policy, hosts=("db.corp.example.com", "*.scim.example.com")))
    try:
        with pytest.raises(PermanentError, match=r"base_url refused: 127\.0\.0\.1 is not one of the hosts"):
            scim.test_connection()
        assert _Catcher.seen == []
        with pytest.raises(PermanentError, match=r"the host in .LAPSE_PG_PROD_DSN refused: 127\.0\.0\.1"):
            pg.test_connection()
        with pytest.raises(ValidationError, match="not one of the hosts integrations may reach"):
            check_config("scim", {"base_url": outside_host, "token_env": "LAPSE_T", "insecure": True})
        with pytest.raises(ValidationError, match="not one of the hosts integrations may reach"):
            check_config(
                "ldap",
                {"url": "ldaps://evil.example.net", "bind_dn": "cn=x", "password_env": "LAPSE_T", "users_base": "o=x"}
                | {"groups_base": "o=x"},
            )
        check_config("scim", {"base_url": "https://crm.scim.example.com/v2", "token_env": "LAPSE_T"})
    finally:
        use_secret_policy(policy)


# --- 6. Verified TLS by default; plaintext only with insecure: true, and flagged -------------------------


def test_f6_plaintext_targets_need_insecure_even_on_loopback() -> None:
    ldap = {"bind_dn": "cn=x", "password_env": "LAPSE_X", "users_base": "o=x", "groups_base": "o=x"}
    with pytest.raises(ValidationError, match="ldap:// sends the bind password in clear"):
        LdapConnector({**ldap, "url": "ldap://127.0.0.1:389"})
    with pytest.raises(ValidationError, match=r"verify_tls: false .* needs insecure"):
        LdapConnector({**ldap, "url": "ldaps://ldap.example.com", "verify_tls": False})
    LdapConnector({**ldap, "url": "ldaps://ldap.example.com"})
    LdapConnector({**ldap, "url": "ldap://ldap.example.com", "start_tls": True})
    LdapConnector({**ldap, "url": "ldap://127.0.0.1:389", "insecure": True})

    with pytest.raises(ValidationError, match="http:// sends the bearer token in clear"):
        ScimConnector({"base_url": "http://127.0.0.1:8080/scim/v2", "token_env": "LAPSE_X"})
    with pytest.raises(ValidationError, match=r"verify_tls: false .* needs insecure"):
        ScimConnector({"base_url": "https://scim.example.com/v2", "token_env": "LAPSE_X", "verify_tls": False})
    ScimConnector({"base_url": "http://127.0.0.1:8080/scim/v2", "token_env": "LAPSE_X", "insecure": True})


def test_f6_postgres_needs_verified_tls_unless_insecure(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())  # 127.0.0.1, no sslmode, a server without TLS
    strict = PostgresConnector({"dsn_env": "LAPSE_TEST_PG_DSN"})
    with pytest.raises(PermanentError, match="PostgreSQL refused TLS"):
        strict.test_connection()  # verify-full by default: the plaintext server is not accepted
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn() + "?sslmode=require")
    with pytest.raises(PermanentError, match="sslmode=require, which does not verify the server"):
        strict.test_connection()
    # No TLS exists on a Unix socket, and it never leaves the host: taken as written, with no flag.
    socket = f"host={postgres.dir} port={postgres.port} user=postgres dbname=postgres"
    assert strict.config.connection_options(socket) == {}

    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    detail = PostgresConnector({"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True}).test_connection()
    assert detail.startswith("PostgreSQL ") and "(plaintext) [INSECURE" in detail


def _certificates(directory: Path, *, names: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``names`` (IP addresses or DNS names) signed by it: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lapse test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o644)  # slapd may run as another user
    return paths


class TlsLdapServer(LdapServer):
    """The test slapd with a certificate for 127.0.0.1 only, on ldap:// (StartTLS) and ldaps://."""

    def __init__(self) -> None:
        super().__init__()
        self.ca, self.cert, self.key = _certificates(self.dir, names=["127.0.0.1"])
        self.ldaps_url = f"ldaps://127.0.0.1:{free_port()}"

    def _config(self) -> str:
        tls = f"TLSCACertificateFile {self.ca}\nTLSCertificateFile {self.cert}\nTLSCertificateKeyFile {self.key}\n"
        return tls + super()._config()

    def start(self) -> TlsLdapServer:
        import subprocess

        (self.dir / "data").mkdir()
        config = self.dir / "slapd.conf"
        config.write_text(self._config())
        with (self.dir / "slapd.log").open("wb") as log:
            listeners = f"{self.url}/ {self.ldaps_url}/"
            self._process = subprocess.Popen(
                [str(SLAPD), "-h", listeners, "-f", str(config), "-d", "stats"], stdout=log, stderr=log
            )
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.stop()
            raise
        with self.admin() as connection:
            connection.add(self.base, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
            connection.add(self.groups, ["organizationalUnit"], {"ou": "groups"})
            connection.add(self.people, ["organizationalUnit"], {"ou": "people"})
        return self


@pytest.fixture(scope="module")
def tls_ldap() -> Iterator[TlsLdapServer]:
    if not SLAPD.exists():
        pytest.skip("slapd is not installed")
    server = TlsLdapServer().start()
    yield server
    server.stop()


def test_f6_ldaps_and_starttls_validate_the_certificate(
    tls_ldap: TlsLdapServer, secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_TEST_LDAP_PASSWORD", tls_ldap.admin_password)
    (secrets_dir / "ldap-ca.pem").write_bytes(tls_ldap.ca.read_bytes())
    base = {
        "bind_dn": tls_ldap.admin_dn,
        "password_env": "LAPSE_TEST_LDAP_PASSWORD",
        "users_base": tls_ldap.people,
        "groups_base": tls_ldap.groups,
        "connect_timeout": 5,
    }
    # ldap3's default would accept any certificate: ours refuses one no trusted CA signed.
    with pytest.raises(PermanentError, match=r"TLS certificate of LDAP at ldaps://127.0.0.1.* is not valid"):
        LdapConnector({**base, "url": tls_ldap.ldaps_url}).test_connection()
    with pytest.raises(PermanentError, match=r"(?i)certificate"):
        LdapConnector({**base, "url": tls_ldap.url, "start_tls": True}).test_connection()

    # With its CA (a file reference under the same allow-list), both work and say so.
    trusted = {**base, "ca_file": "ldap-ca.pem"}
    detail = LdapConnector({**trusted, "url": tls_ldap.ldaps_url}).test_connection()
    assert "(ldaps, certificate verified)" in detail and "INSECURE" not in detail
    assert (
        "(StartTLS, certificate verified)"
        in LdapConnector({**trusted, "url": tls_ldap.url, "start_tls": True}).test_connection()
    )

    # The right CA but another name than the certificate's: refused too.
    port = tls_ldap.ldaps_url.rsplit(":", 1)[1]
    with pytest.raises(PermanentError, match=r"(?i)certificate|doesn't match"):
        LdapConnector({**trusted, "url": f"ldaps://localhost:{port}"}).test_connection()

    # Only an explicit insecure: true turns checking off, and the test says so.
    detail = LdapConnector({**base, "url": tls_ldap.ldaps_url, "verify_tls": False, "insecure": True}).test_connection()
    assert "certificate NOT verified" in detail and "[INSECURE" in detail


@pytest.fixture
def tls_outside_host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The catching server over TLS, with a certificate for 127.0.0.1 from a CA of its own: (url, CA file)."""
    import ssl

    ca, cert, key = _certificates(tmp_path, names=["127.0.0.1"])
    _Catcher.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Catcher)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/scim/v2", ca
    server.shutdown()
    server.server_close()


def test_f6_scim_https_validates_the_certificate(
    tls_outside_host: tuple[str, Path], secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_outside_host
    monkeypatch.setenv("LAPSE_TEST_SCIM_TOKEN", "scim-token")
    with pytest.raises(PermanentError, match=r"TLS certificate of the SCIM server .* is not valid"):
        ScimConnector({"base_url": url, "token_env": "LAPSE_TEST_SCIM_TOKEN"}).test_connection()
    assert _Catcher.seen == []  # the token never left over an unverified connection
    (secrets_dir / "scim-ca.pem").write_bytes(ca.read_bytes())
    trusted = ScimConnector({"base_url": url, "token_env": "LAPSE_TEST_SCIM_TOKEN", "ca_file": "scim-ca.pem"})
    with pytest.raises(PermanentError, match="refused the bearer token"):  # past TLS: the server answered 401
        trusted.test_connection()
    assert _Catcher.seen == ["Bearer scim-token"]


# --- 7. No secret leaves a connector in an error --------------------------------------------------------


def _everything_said(error: BaseException) -> str:
    """All a log line, an activity failure (with its causes) or an audit reason could show of ``error``."""
    activity_error = as_activity_error(error) if isinstance(error, ConnectorError) else error
    return "".join(traceback.format_exception(error)) + str(activity_error) + repr(error.args)


@pytest.mark.parametrize(
    "password",
    ["ab%zzcd-hunter2", "p%", "50%-off!", "s3cr%E9t", "quote'and\\slash%"],
)
def test_f7_malformed_dsn_does_not_leak_password(
    password: str, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", f"postgresql://postgres:{password}@127.0.0.1:{postgres.port}/postgres")
    connector = PostgresConnector({"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True})
    target = Target(integration="pg", resource="postgres", role="r", config={})
    for call in (connector.test_connection, connector.discover, lambda: connector.revoke("alan", target)):
        with pytest.raises(PermanentError, match=r"\$LAPSE_TEST_PG_DSN\) is malformed") as caught:
            call()
        said = _everything_said(caught.value)
        assert password not in said and quote(password, safe="") not in said


def test_f7_driver_errors_quoting_the_secret_are_scrubbed_in_every_spelling(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key=value DSN with a quoted password and an unknown option: libpq quotes what it could not parse.
    monkeypatch.setenv(
        "LAPSE_TEST_PG_DSN", f"host=127.0.0.1 port={postgres.port} password='pa ss%word' sslpassword=x bogus=1"
    )
    with pytest.raises(PermanentError) as caught:
        PostgresConnector({"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True}).test_connection()
    assert "pa ss%word" not in _everything_said(caught.value)

    class Leaky(ConnectorBase):
        """A connector that forgets everything: it quotes its secret, encoded or not, in any exception."""

        def __init__(self, style: str) -> None:
            self.style = style

        def grant(self) -> None:
            value = secret(env="LAPSE_LEAKY_TOKEN", file=None, what="a token", field="token")
            shown = {"raw": value, "encoded": quote(value, safe=""), "repr": repr(value)}[self.style]
            try:
                raise OSError(f"driver said: {shown}")
            except OSError as error:
                raise RetryableError(f"it failed: {shown}") from error

        def discover(self) -> None:
            value = secret(env="LAPSE_LEAKY_TOKEN", file=None, what="a token", field="token")
            raise KeyError("token=" + value)

    monkeypatch.setenv("LAPSE_LEAKY_TOKEN", "tok/en with space+'q'")
    for style in ("raw", "encoded", "repr"):
        with pytest.raises(RetryableError) as failure:
            Leaky(style).grant()
        said = _everything_said(failure.value)
        assert "tok/en" not in said and "tok%2Fen" not in said and "[secret]" in said
        assert isinstance(failure.value, RetryableError) and failure.value.retryable
    with pytest.raises(ConnectorError, match=r"KeyError: .*\[secret\]") as other:
        Leaky("raw").discover()
    assert "tok/en" not in _everything_said(other.value)


# --- 8. Privileged roles and admin groups are never requestable unless allowed by name ---------------------


@dataclass
class Cluster:
    server: PostgresServer
    prefix: str

    def connector(self, **config: Any) -> PostgresConnector:
        return PostgresConnector(
            {"dsn_env": "LAPSE_TEST_PG_DSN", "insecure": True, "role_prefix": self.prefix, **config}
        )


@pytest.fixture
def cluster(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    prefix = f"p{uuid.uuid4().hex[:6]}_"
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        for name, options in (
            ("superuser", "SUPERUSER"),
            ("createrole", "CREATEROLE"),
            ("createdb", "CREATEDB"),
            ("bypassrls", "BYPASSRLS"),
            ("replication", "REPLICATION"),
            ("nested", ""),
            ("deeper", ""),
            ("files", ""),
            ("plain", ""),
        ):
            admin.execute(f"CREATE ROLE {prefix}{name} NOLOGIN {options}")
        admin.execute(f"GRANT {prefix}createrole TO {prefix}nested")  # a member can SET ROLE to it
        admin.execute(f"GRANT {prefix}nested TO {prefix}deeper")
        admin.execute(f"GRANT pg_execute_server_program TO {prefix}files")
        admin.execute(f"CREATE ROLE {prefix}alan LOGIN")
    monkeypatch.setenv("LAPSE_TEST_PG_DSN", postgres.dsn())
    return Cluster(postgres, prefix)


def test_f8_privileged_postgres_roles_are_never_discovered_or_granted(cluster: Cluster) -> None:
    prefix = cluster.prefix
    discovery = cluster.connector().discover()
    assert [role.name for role in discovery.roles] == [f"{prefix}plain"]
    left_out = " ".join(discovery.warnings)
    for name in ("superuser", "createrole", "createdb", "bypassrls", "replication", "nested", "deeper", "files"):
        assert f"left out the privileged role {prefix}{name} " in left_out
    assert f"member of {prefix}createrole: CREATEROLE" in left_out  # found through nested membership

    account = f"{prefix}alan"
    for name in ("createrole", "deeper"):
        target = Target(integration="pg", resource="postgres", role=f"{prefix}{name}", config={})
        with pytest.raises(PermanentError, match=r"is privileged .* not in the integration's allow_privileged"):
            cluster.connector().grant(account, target, None)
    with psycopg.connect(cluster.server.dsn(), autocommit=True) as admin:
        held = admin.execute(
            "SELECT count(*) FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member WHERE m.rolname = %s",
            (account,),
        ).fetchone()
    assert held == (0,)


def test_f8_an_allowed_privileged_role_is_offered_with_a_warning(cluster: Cluster) -> None:
    connector = cluster.connector(allow_privileged=[f"{cluster.prefix}createdb"])
    roles = {role.name: role for role in connector.discover().roles}
    assert set(roles) == {f"{cluster.prefix}plain", f"{cluster.prefix}createdb"}
    assert roles[f"{cluster.prefix}createdb"].description.startswith("WARNING: privileged (CREATEDB)")
    target = Target(integration="pg", resource="postgres", role=f"{cluster.prefix}createdb", config={})
    connector.grant(f"{cluster.prefix}alan", target, None)
    connector.revoke(f"{cluster.prefix}alan", target)


def test_f8_ldap_admin_groups_are_never_discovered_or_granted(
    ldap_server: LdapServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    people, groups = ldap_server.add_ou(f"people-{suffix}"), ldap_server.add_ou(f"groups-{suffix}")
    outside = ldap_server.add_ou(f"elsewhere-{suffix}")
    alan = ldap_server.add_user(f"alan-{suffix}", base=people, email=f"alan.{suffix}@example.com")
    ldap_server.add_group("deployers", [alan], base=groups)
    ldap_server.add_group("Domain Admins", [alan], base=groups)
    ldap_server.add_group("lapse-writers", [ldap_server.admin_dn], base=groups)  # what Lapse itself holds
    ldap_server.add_group("stray", [alan], base=outside)  # not under groups_base
    monkeypatch.setenv("LAPSE_TEST_LDAP_PASSWORD", ldap_server.admin_password)
    config = {
        "url": ldap_server.url,
        "bind_dn": ldap_server.admin_dn,
        "password_env": "LAPSE_TEST_LDAP_PASSWORD",
        "users_base": people,
        "groups_base": groups,
        "insecure": True,
    }
    discovery = LdapConnector(config).discover()
    assert [role.name for role in discovery.roles] == ["deployers"]
    assert any("Domain Admins" in w and "built-in administrators group" in w for w in discovery.warnings)
    assert any("lapse-writers" in w and "bind DN" in w for w in discovery.warnings)
    for name in ("Domain Admins", "lapse-writers", "stray"):
        with pytest.raises(PermanentError, match=r"admin group|not found under"):
            LdapConnector(config).grant(alan, Target("ldap", "groups", name, {}), None)

    allowed = LdapConnector({**config, "allow_privileged": ["domain admins"]})
    roles = {role.name: role for role in allowed.discover().roles}
    assert set(roles) == {"deployers", "Domain Admins"}
    assert roles["Domain Admins"].description.startswith("WARNING: privileged")


# --- 15. Accounts that never collide --------------------------------------------------------------------


def test_f15_postgres_accounts_of_different_emails_never_share_a_login(cluster: Cluster) -> None:
    connector = cluster.connector(create_accounts=True, allow_privileged=[])
    tag = uuid.uuid4().hex[:4]
    dotted, underscored = connector.account_for(f"A.Lan{tag}@example.com"), connector.account_for(f"a_lan{tag}@x.org")
    assert dotted != underscored
    target = Target(integration="pg", resource="postgres", role=f"{cluster.prefix}plain", config={})
    connector.grant(dotted, target, None)
    with psycopg.connect(cluster.server.dsn(), autocommit=True) as admin:
        members = admin.execute(
            "SELECT m.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member "
            "JOIN pg_roles g ON g.oid = a.roleid WHERE g.rolname = %s",
            (target.role,),
        ).fetchall()
    assert members == [(f"a.lan{tag}",)]  # a_lan… holds nothing through a.lan…'s grant
    connector.revoke(underscored, target)  # revoking the other user leaves this one alone
    connector.revoke(dotted, target)

    long_account = connector.account_for("x" * 70 + "@example.com")
    with pytest.raises(PermanentError, match="longer than PostgreSQL's 63 bytes"):
        connector.grant(long_account, target, None)
