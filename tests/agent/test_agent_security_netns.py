"""The agent really off loopback: a network namespace of its own with a veth pair, the agent bound
to 10.77.0.1 (a non-loopback interface address), clients in the same namespace. Without TLS the
agent refuses to start; with mutual TLS and a token, clients without the right credentials are
refused, each told why, the agent keeps serving, and the right client reads the capture's rows
(expected: pandas over its Parquet file).

Needs root (``ip netns``): marked ``kernel`` with the other tests that need root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pxq.agent.security import make_certs
from tests.cli_support import assert_no_traceback, pxq_command

pytestmark = pytest.mark.kernel

AGENT_IP = "10.77.0.1"
CLIENT_IP = "10.77.0.2"
ROOT = Path(__file__).resolve().parents[2]

# Run in the namespace: each attempt's outcome as JSON (the client's own error class and message).
ATTEMPTS = r"""
import json, sys
import pandas as pd
from pxq.agent.flight import AgentClient, AgentDataSource
from pxq.errors import PxqError
address, attempts = sys.argv[1], json.loads(sys.argv[2])
out = {}
for name, credentials in attempts.items():
    try:
        with AgentClient(address, timeout_s=20, credentials=credentials) as client:
            data = AgentDataSource(client).scan("http_events", ["time_", "req_path"])
        out[name] = {"paths": sorted(pd.Series(data.column("req_path").to_pylist()).fillna("<null>"))}
    except PxqError as exc:
        out[name] = {"error": type(exc).__name__, "message": str(exc)}
print(json.dumps(out))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root (this test is marked kernel: run it as root)")
    name = f"pxqsec{os.getpid()}"
    _ip("netns", "add", name)
    try:
        run = ("netns", "exec", name, "ip")
        _ip(*run, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip(*run, "addr", "add", f"{AGENT_IP}/24", "dev", "v0")
        _ip(*run, "addr", "add", f"{CLIENT_IP}/24", "dev", "v1")
        for link in ("lo", "v0", "v1"):
            _ip(*run, "link", "set", link, "up")
        yield name
    finally:
        _ip("netns", "del", name)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _in_netns(netns: str, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *command], capture_output=True, text=True, env=_env(), timeout=timeout
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("netns-certs")
    return {
        "a": make_certs(base / "a", [AGENT_IP])["ca.crt"].parent,
        "b": make_certs(base / "b", [AGENT_IP])["ca.crt"].parent,
    }


def _serve(netns: str, capture: Path, state_dir: Path, *flags: str) -> subprocess.Popen[str]:
    command = pxq_command("agent", "serve", "--from", str(capture), "--listen", f"{AGENT_IP}:0")
    command += ["--state-dir", str(state_dir), *flags]
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def test_off_loopback_without_tls_the_agent_refuses_to_start(netns, http_events_capture, tmp_path):
    proc = _serve(netns, http_events_capture, tmp_path)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert f"refusing to listen on {AGENT_IP} without TLS" in stderr
    assert_no_traceback(stderr)


def test_off_loopback_mutual_tls_and_token(netns, http_events_capture, http_events_req_paths, certs, tmp_path):
    a, b = certs["a"], certs["b"]
    agent = _serve(
        netns, http_events_capture, tmp_path,
        "--tls-cert", str(a / "server.crt"), "--tls-key", str(a / "server.key"),
        "--client-ca", str(a / "ca.crt"), "--token-file", str(a / "agent.token"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        state_path = tmp_path / "agent.json"
        while not state_path.exists():  # written once the server listens
            assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
            assert time.monotonic() < deadline, "the agent did not start within 60 s"
            time.sleep(0.05)
        address = json.loads(state_path.read_text())["address"]
        assert address.startswith(f"{AGENT_IP}:")
        right = {"ca": str(a / "ca.crt"), "cert": str(a / "client.crt"), "key": str(a / "client.key")}
        right["token_file"] = str(a / "agent.token")
        attempts = {
            "none": None,
            "token_in_clear": {"token_file": str(a / "agent.token")},
            "other_ca_client_cert": {**right, "cert": str(b / "client.crt"), "key": str(b / "client.key")},
            "wrong_token": {**right, "token_file": str(b / "agent.token")},
            "right": right,
        }
        proc = _in_netns(netns, sys.executable, "-c", ATTEMPTS, address, json.dumps(attempts))
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        expected = http_events_req_paths
        assert got["right"] == {"paths": expected}
        reasons = {
            "none": ("AgentAuthError", "requires TLS and this client connected in plaintext"),
            "token_in_clear": ("UsageError", "refusing to send the bearer token in clear text off loopback"),
            "other_ca_client_cert": ("AgentAuthError", "refused this client's certificate"),
            "wrong_token": ("AgentAuthError", "bearer token was refused"),
        }
        for name, (error, reason) in reasons.items():
            assert got[name]["error"] == error, (name, got[name])
            assert reason in got[name]["message"], (name, got[name])
        assert agent.poll() is None  # served every refusal and the right client after them
        # The command line, as a user on another node would run it.
        script = tmp_path / "rows.pxl"
        script.write_text("import px\ndf = px.DataFrame('http_events', start_time='-10m')\npx.display(df, 'rows')\n")
        flags = [
            "--agent-ca",
            str(a / "ca.crt"),
            "--agent-cert",
            str(a / "client.crt"),
            "--agent-key",
            str(a / "client.key"),
        ]
        flags += ["--agent-token-file", str(a / "agent.token")]
        run = pxq_command("run", str(script), "--agent", address, "-o", "json")
        ok = _in_netns(netns, *run, *flags)
        assert ok.returncode == 0, ok.stderr
        assert_no_traceback(ok.stderr)
        rows = [json.loads(line) for line in ok.stdout.splitlines() if line.strip()]
        assert sorted(pd.Series([r["req_path"] for r in rows]).fillna("<null>")) == expected
        refused = _in_netns(netns, *run)
        assert refused.returncode == 3
        assert f"agent {address} did not accept the connection: the agent requires TLS" in refused.stderr
        assert_no_traceback(refused.stderr)
    finally:
        agent.terminate()
        agent.wait(30)
