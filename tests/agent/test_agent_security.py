"""The agent's TLS, client certificates and bearer tokens on loopback (``pxq agent serve --from``,
no kernel): each refused client gets an error naming why, the agent goes on serving, and the
right credentials read the capture's rows (expected: pandas over its Parquet file). The config's
refusals off loopback are checked on the address alone here; tests/agent/test_agent_security_netns.py
binds a real non-loopback address in a network namespace."""

from __future__ import annotations

import datetime
import json
import os
import stat
import time
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from pxq.agent.daemon import DaemonConfig, load_config
from pxq.agent.flight import AgentAuthError, AgentClient, AgentDataSource
from pxq.agent.security import ClientCredentials, make_certs
from pxq.errors import UsageError
from pxq.testing.agent_process import AgentProcess
from tests.cli_support import run_pxq

SCRIPT = """import px
df = px.DataFrame('http_events', start_time='-10m')
px.display(df[['time_', 'req_path', 'resp_status']], 'rows')
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs") / "a", ["localhost", "127.0.0.1"])["ca.crt"].parent


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory) -> Path:
    """Another deployment's CA, certificates and token: valid, but not this agent's."""
    return make_certs(tmp_path_factory.mktemp("certs") / "b", ["localhost", "127.0.0.1"])["ca.crt"].parent


def good(certs: Path, token: bool = True) -> dict[str, str]:
    creds = {"ca": str(certs / "ca.crt"), "cert": str(certs / "client.crt"), "key": str(certs / "client.key")}
    if token:
        creds["token_file"] = str(certs / "agent.token")
    return creds


def _agent(capture: Path, state_dir: Path, *flags: str, credentials=None) -> AgentProcess:
    agent = AgentProcess("--from", str(capture), *flags, state_dir=state_dir, credentials=credentials)
    try:
        agent.wait_ready(60)
    except BaseException:
        agent.stop()
        raise
    return agent


@pytest.fixture(scope="module")
def mtls_agent(http_events_capture, certs, tmp_path_factory):
    """Mutual TLS and a bearer token (both required)."""
    agent = _agent(
        http_events_capture,
        tmp_path_factory.mktemp("state"),
        "--tls-cert", str(certs / "server.crt"),
        "--tls-key", str(certs / "server.key"),
        "--client-ca", str(certs / "ca.crt"),
        "--token-file", str(certs / "agent.token"),
        credentials=good(certs),
    )  # fmt: skip
    yield agent
    agent.stop()


def _rows_through(address: str, credentials) -> list[str]:
    """A real query over Flight (one ticket with the table's Source node)."""
    with AgentClient(address, timeout_s=20, credentials=credentials) as client:
        data = AgentDataSource(client).scan("http_events", ["time_", "req_path"])
    return sorted(pd.Series(data.column("req_path").to_pylist()).fillna("<null>"))


def _refused(address: str, credentials) -> str:
    with pytest.raises(AgentAuthError) as caught, AgentClient(address, timeout_s=20, credentials=credentials) as client:
        client.info()
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# mutual TLS + token


def test_right_credentials_read_the_captures_rows(mtls_agent, certs, http_events_req_paths):
    assert _rows_through(mtls_agent.address, good(certs)) == http_events_req_paths


def test_each_refused_client_is_told_why_and_the_agent_goes_on_serving(mtls_agent, certs, other_certs):
    address = mtls_agent.address
    cases = {
        "no credentials (plaintext)": (None, "requires TLS and this client connected in plaintext"),
        "TLS, no client certificate": ({"ca": str(certs / "ca.crt")}, "requires a client certificate"),
        "client certificate of another CA": (
            {**good(certs), "cert": str(other_certs / "client.crt"), "key": str(other_certs / "client.key")},
            "refused this client's certificate",
        ),
        "agent certificate checked against another CA": (
            {**good(certs), "ca": str(other_certs / "ca.crt")},
            f"is not signed by the CA in {other_certs / 'ca.crt'}",
        ),
        "no token": (good(certs, token=False), "requires a bearer token and the call carried none"),
        "wrong token": ({**good(certs), "token_file": str(other_certs / "agent.token")}, "bearer token was refused"),
    }
    for name, (credentials, reason) in cases.items():
        message = _refused(address, credentials)
        assert reason in message, (name, message)
        assert address in message, (name, message)
        assert mtls_agent.proc.poll() is None, f"the agent stopped after: {name}"
        # ... and still answers the right client.
        with AgentClient(address, timeout_s=20, credentials=good(certs)) as client:
            assert client.info()["tables"]
    with AgentClient(address, timeout_s=20, credentials=good(certs)) as client:
        errors = client.status()["query_errors"]
    assert errors.get("no_token", 0) >= 1 and errors.get("wrong_token", 0) >= 1, errors  # counted


def test_pxq_run_with_credential_flags_and_the_refusal_without(mtls_agent, certs, http_events_req_paths, tmp_path):
    script = tmp_path / "rows.pxl"
    script.write_text(SCRIPT)
    refused = run_pxq("run", str(script), "--agent", mtls_agent.address, "-o", "json")
    assert refused.returncode == 3
    assert "requires TLS and this client connected in plaintext" in refused.stderr
    assert "Traceback" not in refused.stderr and "Handshake failed" not in refused.stderr
    flags = ["--agent-ca", str(certs / "ca.crt"), "--agent-cert", str(certs / "client.crt")]
    flags += ["--agent-key", str(certs / "client.key"), "--agent-token-file", str(certs / "agent.token")]
    proc = run_pxq("run", str(script), "--agent", mtls_agent.address, *flags, "-o", "json", check=True)
    paths = sorted(
        pd.Series([json.loads(line)["req_path"] for line in proc.stdout.splitlines() if line.strip()]).fillna("<null>")
    )
    assert paths == http_events_req_paths
    status = run_pxq("agent", "status", "--agent", mtls_agent.address, *flags, check=True)
    assert "clients: mutual TLS + bearer token" in status.stdout


# ---------------------------------------------------------------------------------------------
# token alone, plaintext agent


def test_token_alone_on_loopback(http_events_capture, http_events_req_paths, certs, other_certs, tmp_path):
    token = {"token_file": str(certs / "agent.token")}
    agent = _agent(http_events_capture, tmp_path, "--token-file", token["token_file"], credentials=token)
    try:
        assert "requires a bearer token" in _refused(agent.address, None)
        assert "bearer token was refused" in _refused(agent.address, {"token_file": str(other_certs / "agent.token")})
        assert agent.proc.poll() is None
        assert _rows_through(agent.address, token) == http_events_req_paths
    finally:
        agent.stop()


def test_local_agent_wanting_a_token_is_named_when_pxq_run_falls_back(mtls_agent, certs, capsys, monkeypatch):
    """The local agent (its state file) answers but refuses a run without credentials: said why."""
    import argparse

    from pxq.cli.agent import agent_for_run

    monkeypatch.setenv("PXQ_STATE_DIR", str(mtls_agent.state_dir))
    assert agent_for_run(argparse.Namespace(agent=None, no_agent=False)) is None
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "did not accept this client" in line and "requires TLS" in line and "collecting embedded" in line
    flags = {f"agent_{k}": v for k, v in good(certs).items()}
    assert agent_for_run(argparse.Namespace(agent=None, no_agent=False, **flags)) == mtls_agent.address
    assert "answering from the local agent" in capsys.readouterr().err


def test_agent_certificate_for_other_names(http_events_capture, tmp_path):
    """A certificate of the right CA that does not name the address the client uses."""
    certs = make_certs(tmp_path / "certs", ["node-1.example"])["ca.crt"].parent
    creds = {"ca": str(certs / "ca.crt"), "cert": str(certs / "client.crt"), "key": str(certs / "client.key")}
    tls = ["--tls-cert", str(certs / "server.crt"), "--tls-key", str(certs / "server.key")]
    agent = AgentProcess(
        "--from", str(http_events_capture), *tls, "--client-ca", str(certs / "ca.crt"), state_dir=tmp_path
    )
    try:
        deadline = time.monotonic() + 60
        while not agent.state_path.exists():  # written once it listens (wait_ready cannot connect)
            assert agent.proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        address = json.loads(agent.state_path.read_text())["address"]
        message = _refused(address, creds)
        assert "the agent's certificate names node-1.example, not 127.0.0.1" in message, message
    finally:
        agent.stop()


def test_tls_client_against_a_plaintext_agent(http_events_capture, certs, tmp_path):
    agent = _agent(http_events_capture, tmp_path)
    try:
        message = _refused(agent.address, good(certs))
        assert "does not speak TLS" in message, message
    finally:
        agent.stop()


# ---------------------------------------------------------------------------------------------
# The config: refusals before anything listens.


def test_off_loopback_without_tls_or_client_authentication_is_refused(certs):
    with pytest.raises(UsageError, match="without TLS"):
        DaemonConfig(listen="10.77.0.1:7100", replay="/x").check()
    with pytest.raises(UsageError, match="without TLS"):  # a token alone would cross the network in clear
        DaemonConfig(listen="10.77.0.1:7100", replay="/x", token_file=str(certs / "agent.token")).check()
    with pytest.raises(UsageError, match="TLS alone"):
        DaemonConfig(
            listen="10.77.0.1:7100", replay="/x", tls_cert=str(certs / "server.crt"), tls_key=str(certs / "server.key")
        ).check()
    for extra in ({"client_ca": str(certs / "ca.crt")}, {"token_file": str(certs / "agent.token")}):
        DaemonConfig(
            listen="10.77.0.1:7100",
            replay="/x",
            tls_cert=str(certs / "server.crt"),
            tls_key=str(certs / "server.key"),
            **extra,
        ).check()


def test_incomplete_or_wrong_security_files_are_refused(certs, other_certs, tmp_path):
    base = {"listen": "127.0.0.1:0", "replay": "/x"}
    with pytest.raises(UsageError, match="tls_cert is set but tls_key is not"):
        DaemonConfig(**base, tls_cert=str(certs / "server.crt")).check()
    with pytest.raises(UsageError, match="client_ca .* needs the agent's own certificate"):
        DaemonConfig(**base, client_ca=str(certs / "ca.crt")).check()
    with pytest.raises(UsageError, match="is not the key of the certificate"):
        DaemonConfig(**base, tls_cert=str(certs / "server.crt"), tls_key=str(other_certs / "server.key")).check()
    with pytest.raises(UsageError, match="is not a PEM certificate"):
        DaemonConfig(**base, tls_cert=str(certs / "agent.token"), tls_key=str(certs / "server.key")).check()
    with pytest.raises(UsageError, match="cannot read the token file"):
        DaemonConfig(**base, token_file=str(tmp_path / "absent")).check()
    short = tmp_path / "short.token"
    short.write_text("abc123\n")
    with pytest.raises(UsageError, match="too easy to guess"):
        DaemonConfig(**base, token_file=str(short)).check()
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    with pytest.raises(UsageError, match="is empty"):
        DaemonConfig(**base, token_file=str(empty)).check()


def test_expired_certificate_is_refused(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(past)
        .not_valid_after(past + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "old.crt").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "old.key").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    config = DaemonConfig(listen="127.0.0.1:0", replay="/x", tls_cert=str(tmp_path / "old.crt"))
    config = DaemonConfig(**{**config.__dict__, "tls_key": str(tmp_path / "old.key")})
    with pytest.raises(UsageError, match="expired on 2020-01-02"):
        config.check()


def test_security_section_of_the_toml_config(tmp_path):
    (tmp_path / "agent.toml").write_text(
        '[security]\ntls_cert = "tls/server.crt"\ntls_key = "/abs/server.key"\ntoken_file = "agent.token"\n'
    )
    config = load_config(str(tmp_path / "agent.toml"), {"client_ca": "/flag/ca.crt"})
    assert config.tls_cert == str(tmp_path / "tls" / "server.crt")  # relative: from the file's directory
    assert config.tls_key == "/abs/server.key"
    assert config.token_file == str(tmp_path / "agent.token")
    assert config.client_ca == "/flag/ca.crt"
    (tmp_path / "bad.toml").write_text('[security]\ntoken = "secret-in-the-file"\n')
    with pytest.raises(UsageError, match=r"security\.token: unknown setting"):
        load_config(str(tmp_path / "bad.toml"), {})


def test_serve_refuses_to_start_off_loopback_without_credentials(http_events_capture, tmp_path):
    proc = run_pxq(
        "agent", "serve", "--from", str(http_events_capture), "--listen", "10.77.0.1:7100", "--state-dir", str(tmp_path)
    )
    assert proc.returncode == 2
    assert "refusing to listen on 10.77.0.1 without TLS" in proc.stderr
    assert not (tmp_path / "agent.json").exists()


# ---------------------------------------------------------------------------------------------
# The client's credentials.


def test_client_credentials_mapping_is_checked(certs, tmp_path):
    with pytest.raises(UsageError, match="unknown key 'token'"):
        ClientCredentials.from_mapping({"token": "x"})
    with pytest.raises(UsageError, match="cert is given but key is not"):
        ClientCredentials.from_mapping({"ca": "ca.crt", "cert": "client.crt"})
    with pytest.raises(UsageError, match="needs ca"):
        ClientCredentials.from_mapping({"cert": "client.crt", "key": "client.key"})
    relative = ClientCredentials.from_mapping({"ca": "ca.crt", "token_file": "/abs/t"}, base_dir=tmp_path)
    assert relative.ca == str(tmp_path / "ca.crt") and relative.token_file == "/abs/t"
    with pytest.raises(UsageError, match="refusing to send the bearer token in clear text"):
        AgentClient("10.77.0.1:7100", credentials={"token_file": str(certs / "agent.token")})


# ---------------------------------------------------------------------------------------------
# pxq agent certs


def test_agent_certs_writes_a_ca_server_and_client_certificate(tmp_path):
    out = tmp_path / "deploy"
    proc = run_pxq("agent", "certs", str(out), "--hosts", "node-1.example,10.1.2.3", "--days", "30", check=True)
    assert "--tls-cert" in proc.stdout
    for name in ("ca.key", "server.key", "client.key", "agent.token"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o600, name
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    client = x509.load_pem_x509_certificate((out / "client.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-1.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert (server.not_valid_after_utc - server.not_valid_before_utc).days == 30
    # cryptography's own path validation (RFC 5280, as a TLS stack checks it).
    builder = PolicyBuilder().store(Store([ca]))
    builder.build_server_verifier(x509.DNSName("node-1.example")).verify(server, [])
    builder.build_server_verifier(x509.IPAddress(__import__("ipaddress").ip_address("10.1.2.3"))).verify(server, [])
    builder.build_client_verifier().verify(client, [])
    refused = run_pxq("agent", "certs", str(out))
    assert refused.returncode == 2 and "refusing to overwrite" in refused.stderr
    bad = run_pxq("agent", "certs", str(tmp_path / "x"), "--hosts", "bad host!")
    assert bad.returncode == 2 and "neither an IP address nor a DNS name" in bad.stderr
