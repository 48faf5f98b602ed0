"""The row buffer of the PostgreSQL, MySQL, Redis and DNS tables (protocols/pair_rows.PairRows):
the table it builds from buffers equals the one ``pa.array`` builds from the same values (nulls,
non-ASCII text, several connections and clock offsets, nothing at all), and building it does not
import pandas (``pa.array`` over Python objects does: tens of MB of the agent's RSS)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pyarrow as pa
import pytest
from hypothesis import example, given, settings, strategies as st

from pxq.agent.protocols.pair_rows import CONNECTION_COLUMNS, PairRows, arrow_array
from pxq.tables import CATALOG


@dataclass
class Conn:
    upid: str
    raddr: str
    rport: int
    laddr: str
    lport: int
    role: int


class RedisLikeRows(PairRows):
    """A pair is (request, response) of plain tuples: (start_ns, cmd, args) and (end_ns, text)."""

    TABLE = "redis_events"
    PROTOCOL_COLUMNS = ("req_cmd", "req_args", "resp")

    def row(self, req, resp):
        return resp[0], resp[0] - req[0], (req[1], req[2], resp[1])


class SmallChunkRows(RedisLikeRows):
    """Turns its rows into Arrow every 3 rows (an agent behind: many pairs before the table is
    taken)."""

    arrow_every_rows = 3


def reference_table(batches) -> pa.Table:
    """The rows as pa.array builds them, column by column, from plain Python lists."""
    schema = CATALOG["redis_events"].arrow_schema()
    columns = {f.name: [] for f in schema}
    for conn, pairs, offset in batches:
        for req, resp in pairs:
            columns["time_"].append(resp[0] + offset)
            for name, attr in zip(
                CONNECTION_COLUMNS, ("upid", "raddr", "rport", "laddr", "lport", "role"), strict=True
            ):
                columns[name].append(getattr(conn, attr))
            columns["encrypted"].append(False)
            columns["req_cmd"].append(req[1])
            columns["req_args"].append(req[2])
            columns["resp"].append(resp[1])
            columns["latency"].append(resp[0] - req[0])
    return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)


texts = st.one_of(st.none(), st.text(max_size=20))
pairs = st.lists(
    st.tuples(st.tuples(st.integers(0, 10**12), texts, texts), st.tuples(st.integers(0, 10**12), texts)), max_size=6
)
conns = st.builds(Conn, st.text(max_size=8), st.sampled_from(["127.0.0.1", "::1", "10.1.2.3"]), st.integers(0, 65535),
                  st.sampled_from(["127.0.0.1", ""]), st.integers(0, 65535), st.integers(0, 2))  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(conns, pairs, st.integers(0, 2**40)), max_size=4))
@example([])
@example([(Conn("1:2:3", "::1", 6379, "::1", 5, 1), [((5, None, "é" * 3), (9, None))], 7)])
def test_table_equals_what_pa_array_builds(batches):
    for rows in (RedisLikeRows(), SmallChunkRows()):
        for conn, conn_pairs, offset in batches:
            rows.add_pairs(conn, conn_pairs, offset)
        assert len(rows) == sum(len(conn_pairs) for _, conn_pairs, _ in batches)
        check_table(rows, batches)


def check_table(rows: PairRows, batches) -> None:
    built = rows.table()
    built.validate(full=True)
    assert built.equals(reference_table(batches))
    assert rows.table().num_rows == 0  # taken: the buffer starts over


@pytest.mark.parametrize(
    ("values", "type_"),
    [([1, None, -(2**63)], pa.int64()), ([True, None, False], pa.bool_()), ([None, None], pa.string()),
     ([10**18, 5], pa.timestamp("ns"))],
)  # fmt: skip
def test_arrow_array_of_each_column_type(values, type_):
    assert arrow_array(values, type_).equals(pa.array(values, type=type_))


def test_building_the_table_does_not_import_pandas():
    script = textwrap.dedent(
        """
        import sys
        from pxq.agent.protocols.mysql import MysqlRows
        from pxq.agent.protocols.mysql.stitcher import MysqlRequest, MysqlResponse

        class Conn:
            upid, raddr, laddr, rport, lport, role = "1:2:3", "127.0.0.1", "127.0.0.1", 3306, 40000, 1

        rows = MysqlRows()
        rows.table()  # empty
        rows.add_pairs(Conn, [(MysqlRequest(3, "SELECT 1", 10, 9), MysqlResponse(2, "Resultset rows = 1", 20))], 5)
        assert rows.table().num_rows == 1
        print("pandas" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
