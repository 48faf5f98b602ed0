"""The agent's HTTP path never imports pandas: pyarrow imports it lazily at the first ``pa.array``
call (its pandas shim), which cost the agent 0.2-0.3 s of CPU and ~40 MB of RSS at the first
batch of http_events rows, in the middle of a capture (the ring buffer filling meanwhile)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent(
    """
    import sys
    from pxq.agent.conn_tracker import EV_DATA, INGRESS, EGRESS, ROLE_SERVER, ConnTracker, SockEvent
    from pxq.agent.embedded import EmbeddedAgent  # what the agent process imports
    from pxq.agent.protocols.registry import PROTOCOLS
    from pxq.agent.table_store import TableStore

    def event(ts, pos, direction, data):
        return SockEvent(ts, pos, len(data), 7, 5, 1, len(data), EV_DATA, 0, direction, ROLE_SERVER, 0, 0, 0, 0, 0,
                         bytes(16), bytes(16), data)

    tracker = ConnTracker(protocols=[PROTOCOLS["http"]])
    store = TableStore()
    assert store.table("http_events").num_rows == 0
    request = b"GET /a HTTP/1.1\\r\\nHost: h\\r\\n\\r\\n"
    response = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi"
    for i in range(3):
        tracker.handle(event(10 * i + 1, i * len(request), INGRESS, request))
        tracker.handle(event(10 * i + 2, i * len(response), EGRESS, response))
    tracker.end_batch()
    for name, table in tracker.take_tables().items():
        store.append(name, table)
    assert store.table("http_events").num_rows == 3, store.table("http_events")
    print("pandas" in sys.modules)
    """
)


def test_http_rows_reach_the_table_store_without_importing_pandas():
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
