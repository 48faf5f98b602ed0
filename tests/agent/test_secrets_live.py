"""Credentials never kept by default: a live curl sending Authorization and Cookie headers to a
server answering with Set-Cookie, both traced, captured with `pxq capture`. The rows
show the marker and no file of the capture holds a secret, in its bytes or in any value once
decoded; with keep_secrets (``--keep-secrets``) they are all there.

Needs root and bcc. Fails (never skips silently) when eBPF is unavailable, unless
PXQ_ALLOW_NO_BPF=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pxq.agent.protocols.interface import SECRET_MARKER
from pxq.replay import open_capture
from pxq.testing.kernel import require_bpf
from tests.agent.test_conn_stats_live import APPS, curl_traced
from tests.agent.test_socket_tracer import _readline, _stop
from tests.cli_support import assert_no_traceback, start_pxq

pytestmark = [pytest.mark.kernel]

BEARER = "s3cretTokenValue"
SESSION = "abcSessionValue"
SET_COOKIE = "id=zzServerSecret; Path=/; HttpOnly"
SECRETS = (BEARER, SESSION, "zzServerSecret")


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


def capture_curl_with_credentials(out: Path, keep_secrets: bool) -> int:
    """One curl GET with the credentials to the cookie server, both traced; the server's port."""
    # The secrets reach the programs through a file and the environment, not their command lines:
    # a process's command line is part of its identity in every capture (ps shows it too).
    config = out.parent / "curl.conf"
    config.write_text(f'header = "Authorization: Bearer {BEARER}"\ncookie = "session={SESSION}"\n')
    env = {**os.environ, "SET_COOKIE": SET_COOKIE}
    server = subprocess.Popen([sys.executable, str(APPS), "cookie-server"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        line = _readline(server)
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        curl = curl_traced(set(), [f"http://127.0.0.1:{port}/private"], ("-K", str(config)))

        def fetch() -> None:
            curl.stdin.write("go\n")
            curl.stdin.close()
            err = curl.stderr.read()
            assert curl.wait(timeout=30) == 0, err

        # `pxq capture`, the flag as a user gives it.
        pids = [arg for pid in (server.pid, curl.pid) for arg in ("--pid", str(pid))]
        flag = ["--keep-secrets"] if keep_secrets else []
        pxq = start_pxq("capture", "--out", str(out), "--for", "4s", "--tables", "http_events,conn_stats", *pids, *flag)
        try:
            seen = ""
            while "probes attached" not in seen:  # the agent is live: let curl go
                line = pxq.stderr.readline()
                assert line, f"pxq capture ended before attaching: {seen}"
                seen += line
            fetch()
            _, err = pxq.communicate(timeout=60)
        finally:
            if pxq.poll() is None:
                pxq.kill()
                pxq.wait()
        assert_no_traceback(seen + err, "pxq capture")
        assert pxq.returncode == 0, seen + err
    finally:
        _stop(server)
    return port


def everything_in(directory: Path) -> str:
    """Every file's bytes (as text, undecodable bytes escaped) and every value of every table."""
    parts = [path.read_bytes().decode("latin-1") for path in sorted(directory.rglob("*")) if path.is_file()]
    capture = open_capture(str(directory))
    for name in ("http_events", "conn_stats"):
        parts.append(json.dumps(capture.scan(name).to_pylist(), default=str))
    return "\n".join(parts)


@pytest.mark.parametrize("keep_secrets", [False, True])
def test_credentials_are_kept_only_when_asked(tmp_path, keep_secrets):
    out = tmp_path / "cap"
    port = capture_curl_with_credentials(out, keep_secrets)
    rows = [r for r in open_capture(str(out)).scan("http_events").to_pylist() if r["req_path"] == "/private"]
    assert sorted(r["trace_role"] for r in rows) == [1, 2]  # curl's row and the server's
    for r in rows:
        req, resp = json.loads(r["req_headers"]), json.loads(r["resp_headers"])
        if keep_secrets:
            assert (req["Authorization"], req["Cookie"], resp["Set-Cookie"]) == (
                f"Bearer {BEARER}", f"session={SESSION}", SET_COOKIE,
            )  # fmt: skip
        else:
            assert (req["Authorization"], req["Cookie"], resp["Set-Cookie"]) == (SECRET_MARKER,) * 3
        assert req["Host"] == f"127.0.0.1:{port}"  # other headers untouched
    text = everything_in(out)
    assert [s for s in SECRETS if s in text] == (list(SECRETS) if keep_secrets else [])
