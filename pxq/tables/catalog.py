"""The table catalog: one ``TableSchema`` per table pxq knows, with Pixie's names and meanings.

Column names, types and meanings follow Pixie's Stirling tables
(``pixie:src/stirling/source_connectors/*/*_table.h``) so that PxL scripts written for Pixie carry
over. ``proc_exec_events`` is pxq's own. Everything else in pxq (compiler, agent, replay reader,
renderers, REPL completion, ``docs/tables.md``) reads this module; change a table here and nowhere else.
"""

from __future__ import annotations

from pxq.tables.schema import ColumnSchema, TableSchema
from pxq.types import DataType as T, SemanticType as S

SOCKET_TRACER = "socket_tracer"
PERF_PROFILER = "perf_profiler"
PROCESS_STATS = "process_stats"
PROC_EVENTS = "proc_events"
AGENT = "agent"  # the node agent itself (`pxq agent serve`), not a probe

COLLECTORS = (SOCKET_TRACER, PERF_PROFILER, PROCESS_STATS, PROC_EVENTS, AGENT)


def _c(name: str, type_: T, doc: str, semantic: S = S.NONE) -> ColumnSchema:
    return ColumnSchema(name=name, type=type_, semantic=semantic, doc=doc)


TIME = _c("time_", T.TIME64NS, "Time the event (or sample) was recorded, ns since the epoch (UTC).", S.TIME)
UPID = _c(
    "upid",
    T.UINT128,
    "Unique process id: agent short id, pid and process start time, as '<asid>:<pid>:<start_ticks>'.",
    S.UPID,
)
REMOTE_ADDR = _c("remote_addr", T.STRING, "IP address of the remote endpoint of the connection.", S.IP_ADDRESS)
REMOTE_PORT = _c("remote_port", T.INT64, "Port of the remote endpoint of the connection.", S.PORT)
TRACE_ROLE = _c(
    "trace_role",
    T.INT64,
    "Side of the connection the traced process is on: 1 = client, 2 = server (0 = unknown).",
)

# The columns every protocol (request/response) table starts with.
PROTOCOL_HEAD = (
    TIME,
    UPID,
    REMOTE_ADDR,
    REMOTE_PORT,
    _c("local_addr", T.STRING, "IP address of the local endpoint of the connection.", S.IP_ADDRESS),
    _c("local_port", T.INT64, "Port of the local endpoint of the connection.", S.PORT),
    TRACE_ROLE,
    _c("encrypted", T.BOOLEAN, "Whether the traffic was encrypted (captured as TLS plaintext)."),
)
# ... and the column every protocol table ends with.
LATENCY = _c(
    "latency", T.INT64, "Time from the request's first byte to the response's last byte, in ns.", S.DURATION_NS
)


def _protocol_table(name: str, protocol: str, doc: str, *columns: ColumnSchema) -> TableSchema:
    return TableSchema(
        name=name,
        columns=PROTOCOL_HEAD + tuple(columns) + (LATENCY,),
        doc=doc,
        collector=SOCKET_TRACER,
        protocol=protocol,
    )


HTTP_EVENTS = _protocol_table(
    "http_events",
    "http",
    "HTTP/1.x request-response pairs traced from socket syscalls (and TLS libraries).",
    _c("major_version", T.INT64, "HTTP major version (1)."),
    _c("minor_version", T.INT64, "HTTP minor version (0 or 1)."),
    _c("content_type", T.INT64, "Body content type enum: 0 = unknown, 1 = JSON, 2 = gRPC."),
    _c("req_headers", T.STRING, "Request headers as a JSON object {name: value}.", S.JSON),
    _c("req_method", T.STRING, "Request method (GET, POST, ...)."),
    _c("req_path", T.STRING, "Request target: path and query string."),
    _c(
        "req_body",
        T.STRING,
        "Request body, possibly truncated. Bytes the kernel counted but did not copy "
        "(sendfile, splice, a call beyond the copy limit) show as `<not captured: N bytes>` (Pixie shows NUL "
        "bytes). A gzip or deflate Content-Encoding is shown decoded (up to the body limit); where decoding "
        "stopped short it ends with '<gzip body failed to decode here>' (invalid bytes), "
        "'<gzip body truncated>' (the stream ended early) or `<not captured: N bytes>`; 'deflate' for deflate.",
    ),
    _c(
        "req_body_size", T.INT64, "Size of the request body in bytes as sent (encoded), before any truncation.", S.BYTES
    ),
    _c("resp_headers", T.STRING, "Response headers as a JSON object {name: value}.", S.JSON),
    _c("resp_status", T.INT64, "Response status code (200, 404, ...).", S.HTTP_STATUS),
    _c("resp_message", T.STRING, "Response reason phrase (OK, Not Found, ...)."),
    _c("resp_body", T.STRING, "Response body, possibly truncated; uncaptured bytes and encodings as in req_body."),
    _c(
        "resp_body_size",
        T.INT64,
        "Size of the response body in bytes as sent (encoded), before any truncation.",
        S.BYTES,
    ),
)

MYSQL_EVENTS = _protocol_table(
    "mysql_events",
    "mysql",
    "MySQL / MariaDB commands and their responses (one row per command; the connection handshake is one too).",
    _c(
        "req_cmd",
        T.INT64,
        "MySQL command byte (Pixie's enum: 1 = Quit, 2 = InitDB, 3 = Query, 11 = Connect (pxq: the handshake), "
        "14 = Ping, 22 = StmtPrepare, 23 = StmtExecute, 25 = StmtClose, ...).",
    ),
    _c(
        "req_body",
        T.STRING,
        "Command payload: the SQL text of a query or prepared statement, the database of InitDB; for StmtExecute "
        "'query=[<statement>] params=[<values>]' (Pixie's form); for the handshake the user, database and auth "
        "plugin, the auth response shown as '<redacted>' unless secrets are kept. Cut at the body limit "
        "('... [TRUNCATED]').",
    ),
    _c("resp_status", T.INT64, "Response status (Pixie's RespStatus): 0 = unknown, 1 = none, 2 = OK, 3 = error."),
    _c(
        "resp_body",
        T.STRING,
        "Response summary: 'Resultset rows = N' per result set (joined with ', '), 'Affected rows = N' for an OK "
        "answer to a query or statement execution (pxq's; Pixie leaves it empty), 'ERROR <code> (<SQLSTATE>): "
        "<message>' for an error (Pixie: the message only).",
    ),
)

PGSQL_EVENTS = _protocol_table(
    "pgsql_events",
    "pgsql",
    "PostgreSQL request-response pairs (frontend/backend protocol v3), traced from socket syscalls.",
    _c(
        "req_cmd",
        T.STRING,
        "Request message, Pixie's names: 'Query' (simple query), 'Parse', 'Bind', 'Describe', 'Execute' (extended "
        "protocol), 'Password Message' (authentication).",
    ),
    _c(
        "req",
        T.STRING,
        "Request as Pixie renders it: the SQL of a Query or Parse; 'query=[SQL] params=[v1, v2]' for an Execute (the "
        "bound statement and values); 'portal=... statement=... parameters=[...]' for a Bind; a password or SASL "
        "message shows as <redacted> unless secrets are kept.",
    ),
    _c(
        "resp",
        T.STRING,
        "Response as Pixie renders it: column names, rows (comma-separated, [NULL] for NULL; rows past the body "
        "limit counted) and the command tag ('SELECT 2'), one block per statement of a Query; "
        "'ERROR RESPONSE [Severity=ERROR Code=42P01 Message=...]'; 'PARSE COMPLETE', 'BIND COMPLETE'.",
    ),
)

DNS_EVENTS = _protocol_table(
    "dns_events",
    "dns",
    "DNS queries and their answers over UDP and TCP (an unanswered query: empty resp_* and latency 0). "
    "Over UDP, local_addr/local_port come from /proc while the socket lives (else empty and 0).",
    _c(
        "req_header",
        T.STRING,
        'Query header as JSON: {"txid", "qr", "opcode", "aa", "tc", "rd", "ra", "ad", "cd", "rcode", '
        '"num_queries", "num_answers", "num_auth", "num_addl"} (the header\'s counts, as on the wire).',
        S.JSON,
    ),
    _c(
        "req_body",
        T.STRING,
        'Questions as JSON: {"queries": [{"name", "type"}]} (names without the final dot).',
        S.JSON,
    ),
    _c("resp_header", T.STRING, "Response header as JSON, the keys of req_header; empty when unanswered.", S.JSON),
    _c(
        "resp_body",
        T.STRING,
        'A, AAAA and CNAME answers as JSON: {"answers": [{"name", "type", "addr"} or {"name", "type": "CNAME", '
        '"cname"}]} (other record types are counted in resp_header only, as Pixie does); empty when unanswered.',
        S.JSON,
    ),
)

REDIS_EVENTS = _protocol_table(
    "redis_events",
    "redis",
    "Redis commands and their replies (RESP2 and RESP3), one row per command in the order each connection "
    "sent them: pipelined commands pair with their replies in order, MULTI/EXEC's commands are rows (answered "
    "QUEUED) and EXEC's row holds the transaction's replies, a message pushed to a subscriber is a row of its "
    "own. time_ is the reply's last byte; latency is 0 for a push and for a command the server does not answer "
    "(CLIENT REPLY OFF/SKIP).",
    _c(
        "req_cmd",
        T.STRING,
        "Command name in capitals, two words for a container command and its subcommand (CLIENT SETNAME, "
        "CONFIG GET), as Pixie names them; PUSH PUB for a pushed pub/sub message (no command), PUSH for another "
        "RESP3 push; empty when the first word is no Redis command.",
    ),
    _c(
        "req_args",
        T.STRING,
        "The arguments as JSON, in Pixie's format: an object keyed by the argument names of the command's "
        'syntax ({"key":"foo"}), else an array of the words. Credentials (AUTH, HELLO ... AUTH, MIGRATE '
        "AUTH/AUTH2, CONFIG SET requirepass/masterauth, ACL SETUSER passwords) show as <redacted>; a value "
        "longer than the body limit is cut and ends with <truncated: N bytes>.",
    ),
    _c(
        "resp",
        T.STRING,
        "The reply as text (Pixie's format): a string as itself, an integer in decimal, an error with its "
        "leading '-', nil <NULL>, an array a JSON array of its elements' texts (a nested array as JSON text), "
        "a RESP3 map a JSON object; a SUBSCRIBE's confirmations one per line; cut at the body limit.",
    ),
)

CONN_STATS = TableSchema(
    name="conn_stats",
    doc=(
        "Connections and bytes per process and remote endpoint (a server's clients under remote port 0, "
        "as in Pixie), cumulative since tracing began: a row every report interval (1 s, "
        "#px:set socket_tracer.conn_stats_interval_s=S) while the endpoint has a connection, once more "
        "after its last one ends, and (pxq's own) one just before a connection it gets after none, so "
        "that max - min over a window counts connections that began in it. Bytes are the kernel's "
        "count of every call, also of connections whose protocol pxq does not parse. A UDP socket is "
        "a connection per peer (pxq's own; Pixie counts it under its first peer), its bytes those "
        "of its datagrams; once a socket of no parsed protocol is switched off, its further bytes "
        "go to its oldest peer."
    ),
    collector=SOCKET_TRACER,
    columns=(
        TIME,
        UPID,
        REMOTE_ADDR,
        _c("remote_port", T.INT64, "Port of the remote endpoint; 0 when the traced process is the server.", S.PORT),
        TRACE_ROLE,
        _c("addr_family", T.INT64, "Socket address family: 2 = AF_INET, 10 = AF_INET6, 1 = AF_UNIX."),
        _c(
            "protocol",
            T.INT64,
            "Inferred protocol of the endpoint's latest connection: 0 unknown, 1 HTTP, 2 HTTP2, 3 MySQL, "
            "4 CQL, 5 PGSQL, 6 DNS, 7 Redis, 8 NATS, 9 Mongo, 10 Kafka, 11 Mux, 12 AMQP, 13 TLS.",
        ),
        _c("ssl", T.BOOLEAN, "Whether the connection uses TLS (always false: pxq does not trace TLS yet)."),
        _c(
            "conn_open",
            T.INT64,
            "Connections opened (cumulative); one already open when tracing began counts when first seen.",
        ),
        _c(
            "conn_close",
            T.INT64,
            "Connections closed (cumulative): by close(), or as their process ended (pxq; Pixie counts the "
            "close it saw). One still open when the capture ends is not closed.",
        ),
        _c("conn_active", T.INT64, "Connections open now: conn_open - conn_close."),
        _c("bytes_sent", T.INT64, "Bytes sent to the remote endpoint (cumulative).", S.BYTES),
        _c("bytes_recv", T.INT64, "Bytes received from the remote endpoint (cumulative).", S.BYTES),
    ),
)

PROCESS_STATS_TABLE = TableSchema(
    name="process_stats",
    doc="Per-process CPU, memory and I/O counters read from /proc, sampled periodically.",
    collector=PROCESS_STATS,
    columns=(
        TIME,
        UPID,
        _c("major_faults", T.INT64, "Major page faults (cumulative)."),
        _c("minor_faults", T.INT64, "Minor page faults (cumulative)."),
        _c("cpu_utime_ns", T.INT64, "CPU time spent in user mode, in ns (cumulative).", S.DURATION_NS),
        _c("cpu_ktime_ns", T.INT64, "CPU time spent in kernel mode, in ns (cumulative).", S.DURATION_NS),
        _c("num_threads", T.INT64, "Number of threads in the process."),
        _c("vsize_bytes", T.INT64, "Virtual memory size in bytes.", S.BYTES),
        _c("rss_bytes", T.INT64, "Resident set size in bytes.", S.BYTES),
        _c("rchar_bytes", T.INT64, "Bytes read by read-like syscalls, including page cache (cumulative).", S.BYTES),
        _c("wchar_bytes", T.INT64, "Bytes written by write-like syscalls, including page cache (cumulative).", S.BYTES),
        _c("read_bytes", T.INT64, "Bytes actually fetched from storage (cumulative).", S.BYTES),
        _c("write_bytes", T.INT64, "Bytes actually sent to storage (cumulative).", S.BYTES),
    ),
)

STACK_TRACES = TableSchema(
    name="stack_traces.beta",
    doc="CPU profile: sampled stack traces with how many times each was seen in the sampling window.",
    collector=PERF_PROFILER,
    columns=(
        TIME,
        UPID,
        _c("stack_trace_id", T.INT64, "Id of the stack trace: a hash of its folded text, stable across captures."),
        _c(
            "stack_trace",
            T.STRING,
            "Folded stack, root first, frames ';'-separated: user frames, then kernel frames (suffix "
            "'_[k]'); Python frames as 'function (file:line)', where the interpreter's evaluation "
            "function stands (py-spy's rows: its own shortened file names); a frame without a symbol "
            "as 'module+0xoffset' ('[anon]+0x..' for anonymous memory, '[unknown]' outside any mapping).",
            S.STACK_TRACE,
        ),
        _c("count", T.INT64, "Number of samples with this stack in the window."),
        _c(
            "sampler",
            T.STRING,
            "pxq's own (not in Pixie): what sampled the stack: 'ebpf' (kernel perf "
            "event: native, kernel and, for a CPython the BPF walker reads, Python frames) or 'py-spy' "
            "(a Python the walker cannot read; that process then has no 'ebpf' rows).",
        ),
        _c(
            "truncated",
            T.BOOLEAN,
            "pxq's own (not in Pixie): the user stack looks cut short (its outermost "
            "frame is no process or thread entry), typically code built without frame pointers.",
        ),
    ),
)

PROC_EXIT_EVENTS = TableSchema(
    name="proc_exit_events",
    doc="Process exits, from the scheduler's process-exit tracepoint.",
    collector=PROC_EVENTS,
    columns=(
        TIME,
        UPID,
        _c("exit_code", T.INT64, "Exit code passed to exit() (0 when killed by a signal)."),
        _c("signal", T.INT64, "Number of the signal that terminated the process, 0 if none."),
        _c("comm", T.STRING, "Command name of the process (at most 15 characters)."),
    ),
)

PROC_EXEC_EVENTS = TableSchema(
    name="proc_exec_events",
    doc="pxq's own (not in Pixie): process executions, from the scheduler's process-exec tracepoint.",
    collector=PROC_EVENTS,
    columns=(
        TIME,
        UPID,
        _c("ppid", T.INT64, "Pid of the parent process."),
        _c("comm", T.STRING, "Command name of the new program (at most 15 characters)."),
        _c("cmdline", T.STRING, "Full command line, arguments separated by spaces (possibly truncated)."),
        _c("exe", T.STRING, "Path of the executed binary."),
    ),
)

AGENT_STATUS = TableSchema(
    name="agent_status",
    doc="The node agent's health (`pxq agent serve`), a row every 10 s and one per query reading it: "
    "Pixie's GetAgentStatus columns, then pxq's own (CPU, RSS, what the store holds, losses).",
    collector=AGENT,
    columns=(
        TIME,
        _c("upid", T.UINT128, "Unique process id of the agent process itself.", S.UPID),
        _c("agent_id", T.STRING, "The agent's id: '<hostname>:<pid>:<start ns>' (Pixie: a UUID)."),
        _c("asid", T.INT64, "The agent short id in the upids it makes (config asid, else from the host name)."),
        _c("hostname", T.STRING, "Host name of the agent's node."),
        _c("ip_address", T.STRING, "Address the agent serves Arrow Flight on.", S.IP_ADDRESS),
        _c("agent_state", T.STRING, "AGENT_STATE_HEALTHY, or AGENT_STATE_UNRESPONSIVE once collection failed."),
        _c("create_time", T.TIME64NS, "When the agent started.", S.TIME),
        _c(
            "last_heartbeat_ns",
            T.INT64,
            "Time since the agent's last heartbeat, in ns (0: it answers itself).",
            S.DURATION_NS,
        ),
        _c("cpu_utime_ns", T.INT64, "CPU time of the agent in user mode, in ns (cumulative).", S.DURATION_NS),
        _c("cpu_ktime_ns", T.INT64, "CPU time of the agent in kernel mode, in ns (cumulative).", S.DURATION_NS),
        _c("rss_bytes", T.INT64, "Resident set size of the agent in bytes.", S.BYTES),
        _c("table_rows", T.INT64, "Rows the agent's store holds, all tables."),
        _c("table_bytes", T.INT64, "Bytes the agent's store holds, all tables.", S.BYTES),
        _c("events_lost", T.INT64, "Events the collectors lost so far, every table and reason."),
        _c("rows_evicted", T.INT64, "Rows evicted so far for being older than the retention."),
        _c("drops", T.STRING, "Loss counters as JSON: {table: {reason: count}}.", S.JSON),
    ),
)

TABLES: tuple[TableSchema, ...] = (
    HTTP_EVENTS,
    MYSQL_EVENTS,
    PGSQL_EVENTS,
    DNS_EVENTS,
    REDIS_EVENTS,
    CONN_STATS,
    PROCESS_STATS_TABLE,
    STACK_TRACES,
    PROC_EXIT_EVENTS,
    PROC_EXEC_EVENTS,
    AGENT_STATUS,
)
