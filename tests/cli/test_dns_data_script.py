"""The bundled dns_data script computes what its docstring says, over a capture whose dns_events
rows come from a real dnsmasq conversation (the recorded datagrams) seen from the client's side and
from the server's; the expected values are computed with pandas from the capture's own rows."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

import pxq
from pxq.agent.protocols.dns import RECORDED_DATAGRAMS
from pxq.replay import open_capture, write_capture
from pxq.testing.conversations import Connection, ConversationCapture
from pxq.testing.streams import load_stream

START_NS = 1_764_115_200_000_000_000
CLIENT = {"upid": "0:2001:11", "pid": 2001, "comm": "dig", "pod": ""}
SERVER = {"upid": "0:2002:12", "pid": 2002, "comm": "dnsmasq", "pod": "default/dns-0"}


def conversation(conversations: ConversationCapture, who: dict, role: int, remote: tuple[str, int],
                 local: tuple[str, int], shift_ns: int, unanswered: bool) -> None:  # fmt: skip
    stream = load_stream(RECORDED_DATAGRAMS / "udp_four_queries.json")
    if unanswered:  # the last answer never came
        stream = replace(stream, chunks=stream.chunks[:-1])
    end = Connection(who["upid"], local[0], local[1], remote[0], remote[1], role)
    conversations.add("dns", stream, (end,), START_NS + shift_ns, datagrams=True)


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    conversations = ConversationCapture()
    conversation(conversations, CLIENT, 1, ("127.0.0.1", 53), ("127.0.0.1", 40000), 10**9, unanswered=False)
    conversation(conversations, SERVER, 2, ("127.0.0.1", 40001), ("127.0.0.1", 53), 2 * 10**9, unanswered=True)
    conversation(conversations, CLIENT, 1, ("127.0.0.1", 53), ("127.0.0.1", 40002), 200 * 10**9, unanswered=False)
    directory = tmp_path_factory.mktemp("dns_capture")
    processes = {
        p["upid"]: {"pid": p["pid"], "comm": p["comm"], "cmdline": p["comm"], "exe": "", "container_id": "",
                    "pod": p["pod"], "namespace": "default" if p["pod"] else ""}
        for p in (CLIENT, SERVER)
    }  # fmt: skip
    write_capture(directory, {"dns_events": conversations.tables()["dns_events"]}, host="test", start_time_ns=START_NS,
                  end_time_ns=START_NS + 300 * 10**9, processes=processes)  # fmt: skip
    return str(directory)


def expected(directory: str, start_time_s: int, source_filter: str, destination_filter: str, num_head: int):
    cap = open_capture(directory)
    frame = cap.scan("dns_events").to_pandas()
    frame = frame[frame["time_"].astype("int64") >= cap.end_time_ns - start_time_s * 10**9]
    by_upid = {CLIENT["upid"]: CLIENT, SERVER["upid"]: SERVER}
    local = frame["upid"].map(lambda u: by_upid[u]["pod"] or f"{by_upid[u]['comm']}[{by_upid[u]['pid']}]")
    remote = frame["remote_addr"] + ":" + frame["remote_port"].astype(str)
    server = frame["trace_role"] == 2
    frame = frame.assign(source=remote.where(server, local), destination=local.where(server, remote))
    frame = frame[frame["source"].str.contains(source_filter, regex=False)]
    frame = frame[frame["destination"].str.contains(destination_filter, regex=False)]
    return frame.head(num_head)


@pytest.mark.parametrize(("start_time", "source_filter", "destination_filter", "num_head"), [
    ("-5m", "", "", 1000), ("-5m", "dig", "", 1000), ("-5m", "", "dns-0", 3), ("-2m", "", "", 1000),
])  # fmt: skip
def test_dns_data_rows(capture, start_time, source_filter, destination_filter, num_head):
    (table,) = pxq.run("dns_data", args={"start_time": start_time, "source_filter": source_filter,
                                         "destination_filter": destination_filter, "num_head": num_head},
                       source=capture).values()  # fmt: skip
    want = expected(capture, int(start_time[1:-1]) * 60, source_filter, destination_filter, num_head)
    assert list(table.columns) == ["time_", "source", "destination", "latency", "req_header", "req_body",
                                   "resp_header", "resp_body"]  # fmt: skip
    assert len(want) > 0 and len(table) == len(want)
    for column in ("source", "destination", "req_header", "req_body", "resp_header", "resp_body"):
        assert table[column].tolist() == want[column].tolist(), column
    assert pd.to_timedelta(table["latency"]).dt.total_seconds().mul(1e9).round().astype("int64").tolist() == \
        want["latency"].tolist()  # fmt: skip


def test_an_unanswered_query_shows_empty_response_columns(capture):
    (table,) = pxq.run("dns_data", args={"destination_filter": "dns-0"}, source=capture).values()
    unanswered = table[table["resp_header"] == ""]
    assert len(unanswered) == 1 and unanswered["source"].tolist() == ["127.0.0.1:40001"]
