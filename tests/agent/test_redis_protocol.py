"""The Redis parser and stitcher without a kernel: Pixie's own test vectors, the recorded
conversations (pxq/agent/protocols/redis/streams/), the pairing rules, secrets, inference."""

from __future__ import annotations

import json

import pytest

from pxq.agent.protocols.interface import SECRET_MARKER, ParseOptions
from pxq.agent.protocols.redis import (
    RECORDED_STREAMS,
    RedisStitcher,
    looks_like_redis_request,
    looks_like_redis_response,
    make_record,
    resp,
)
from pxq.agent.protocols.redis.stitcher import split_inline
from pxq.testing.streams import load_stream, replay

OPTIONS = ParseOptions(body_limit=1024)


def bulk_array(*words: str | bytes) -> bytes:
    """A client command as redis-cli and every client library send it: an array of bulk strings."""
    out = b"*%d\r\n" % len(words)
    for w in words:
        b = w.encode() if isinstance(w, str) else w
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


def rows(chunks: list[tuple[str, bytes]], options: ParseOptions = OPTIONS) -> tuple[list[tuple], RedisStitcher]:
    """(req_cmd, req_args, resp) per pair, feeding chunks 1 ns apart, then closing."""
    st = RedisStitcher(options)
    pairs = []
    for i, (direction, data) in enumerate(chunks):
        pairs += st.feed_messages(direction == "req", data, 1000 * (i + 1))
    pairs += st.close_messages(1000 * (len(chunks) + 1))
    return [(r.req_cmd, r.req_args, r.resp) for r in map(lambda p: make_record(*p), pairs)], st


# -- Pixie's parse_test.cc ---------------------------------------------------------------------
# src/stirling/source_connectors/socket_tracer/protocols/redis/parse_test.cc (pixie-io/pixie):
# (input, expected command, expected payload), for requests (R) and/or responses (S). Pixie
# parses a client's bytes as any RESP value; Redis reads a client's message as an array or else
# an inline line (processInputBuffer in Redis' networking.c), and so does pxq: the scalars and the
# null array are tested as replies only.
PIXIE_WELL_FORMED = [
    (b"+OK\r\n", "", "OK", "S"),
    (b"-Error message\r\n", "", "-Error message", "S"),
    (b"$11\r\nbulk string\r\n", "", "bulk string", "S"),
    (b"$0\r\n\r\n", "", "", "S"),
    (b"$-1\r\n", "", "<NULL>", "S"),
    (b"*3\r\n+OK\r\n-Error message\r\n$11\r\nbulk string\r\n", "", '["OK","-Error message","bulk string"]', "RS"),
    (b"*2\r\n+ACL\r\n+LOAD\r\n", "ACL LOAD", "[]", "R"),
    (b"*1\r\n$-1\r\n", "", '["<NULL>"]', "RS"),
    (b"*-1\r\n", "", "[NULL]", "S"),
    (b"*0\r\n", "", "[]", "S"),  # (a request of no words is no command: Redis answers nothing)
    (b"*3\r\n$6\r\nappend\r\n$3\r\nfoo\r\n$3\r\nbar\r\n", "APPEND", '{"key":"foo","value":"bar"}', "R"),
    (b"*2\r\n$11\r\nacl getuser\r\n$4\r\nuser\r\n", "ACL GETUSER", '{"username":"user"}', "R"),
    (b"*3\r\n$11\r\nacl deluser\r\n$3\r\nfoo\r\n$3\r\nbar\r\n", "ACL DELUSER", '{"username":["foo","bar"]}', "R"),
    (b"*4\r\n$10\r\nbrpoplpush\r\n$3\r\nsrc\r\n$4\r\ndest\r\n:10\r\n", "BRPOPLPUSH",
     '{"source":"src","destination":"dest","timeout":"10"}', "R"),
    (b"*4\r\n$5\r\nlpush\r\n$3\r\nfoo\r\n$4\r\nbar0\r\n$4\r\nbar1\r\n", "LPUSH",
     '{"key":"foo","element":["bar0","bar1"]}', "R"),
    (b"*3\r\n$7\r\nzpopmax\r\n$3\r\nfoo\r\n:10\r\n", "ZPOPMAX", '{"key":"foo","count":"10"}', "R"),
    (b"*2\r\n$7\r\nzpopmax\r\n$3\r\nfoo\r\n", "ZPOPMAX", '{"key":"foo"}', "R"),
    (b"*3\r\n$6\r\nswapdb\r\n$3\r\nfoo\r\n$3\r\nbar\r\n", "SWAPDB", '{"index1":"foo","index2":"bar"}', "R"),
    (b"*5\r\n$7\r\nevalsha\r\n$3\r\nsha\r\n:3\r\n$3\r\nfoo\r\n$3\r\nbar\r\n", "EVALSHA",
     '{"sha1":"sha","numkeys":"3","key":["foo"],"value":["bar"]}', "R"),
    (b"*4\r\n$4\r\nhset\r\n$3\r\nfoo\r\n$3\r\nval\r\n:3\r\n", "HSET",
     '{"key":"foo","field value":[{"field":"val"},{"value":"3"}]}', "R"),
]  # fmt: skip


def _as_response(data: bytes) -> str:
    value, end = resp.parse(data)
    assert end == len(data)
    return resp.format_value(value)


def _as_request(data: bytes) -> tuple[str, str]:
    st = RedisStitcher(OPTIONS)
    assert st.feed_messages(True, data, 1) == []
    pairs = st.feed_messages(False, b"+OK\r\n", 2)
    assert len(pairs) == 1
    return pairs[0][0].cmd, pairs[0][0].payload


@pytest.mark.parametrize(("data", "command", "payload", "sides"), PIXIE_WELL_FORMED)
def test_pixie_well_formed_messages(data, command, payload, sides):
    if "S" in sides:
        assert _as_response(data) == payload
    if "R" in sides:
        assert _as_request(data) == (command, payload)


# parse_test.cc ParseIncompleteInputTest: every one needs more bytes.
PIXIE_INCOMPLETE = ["+OK\r", "+OK", "+", "-Error message\r", "-Error message", "-", "$11\r\nbulk string\r",
    "$11\r\nbulk string", "$11\r\nbulk", "$11\r\n", "$11\r", "$11", "$",
    "*3\r\n+OK\r\n-Error message\r\n$11\r\nbulk string\r", "*3\r\n+OK\r\n-Error message\r\n$11\r\nbulk string",
    "*3\r\n+OK\r\n-Error message\r\n$11\r\nbulk ", "*3\r\n+OK\r\n-Error message\r\n$11\r\n",
    "*3\r\n+OK\r\n-Error message\r\n$11\r", "*3\r\n+OK\r\n-Error message\r\n$11", "*3\r\n+OK\r\n-Error message\r\n",
    "*3\r\n+OK\r\n-Error message\r", "*3\r\n+OK\r\n-Error message", "*3\r\n+OK\r\n", "*3\r\n+OK\r", "*3\r\n+OK",
    "*3\r\n", "*3\r", "*3"]  # fmt: skip


@pytest.mark.parametrize("data", PIXIE_INCOMPLETE)
def test_pixie_incomplete_messages_need_more(data):
    with pytest.raises(resp.NeedMore) as more:
        resp.parse(data.encode())
    assert more.value.total > len(data)


# parse_test.cc ParseInvalidInputTest (its last three strings run together in Pixie's source,
# a missing comma; each is tested alone here).
@pytest.mark.parametrize("data", [b"a", b"b", b"c", b"$1\r\nabc", b"$-2\r\n", b"*-2\r\n"])
def test_pixie_invalid_messages(data):
    with pytest.raises(resp.Invalid):
        resp.parse(data)


def test_pixie_published_message_is_a_push_row():
    """parse_test.cc DetectPublishedMessage + stitcher.h: a pushed message is a row of its own."""
    got, _ = rows([
        ("req", bulk_array("SUBSCRIBE", "foo")),
        ("resp", b"*3\r\n$9\r\nsubscribe\r\n$3\r\nfoo\r\n:1\r\n"),
        ("resp", b"*3\r\n$7\r\nmessage\r\n$3\r\nfoo\r\n$4\r\ntest\r\n"),
    ])  # fmt: skip
    assert got == [
        ("SUBSCRIBE", '{"channel":["foo"]}', '["subscribe","foo","1"]'),
        ("PUSH PUB", "", '["message","foo","test"]'),
    ]


# redis_trace_bpf_test.cc VerifyBatchedCommands / ScriptLoadAndEvalSHA / VerifyCommand: the
# (command line, req_cmd, req_args) Pixie's kernel test expects.
PIXIE_COMMAND_ROWS = [
    ("ping test", "PING", '{"message":"test"}'),
    ("set foo 100 EX 10 NX", "SET", '{"key":"foo","value":"100","options":["EX 10","NX"]}'),
    ("expire foo 10000", "EXPIRE", '{"key":"foo","seconds":"10000"}'),
    ("bitcount foo 0 0", "BITCOUNT", '["foo","0","0"]'),
    ("incr foo", "INCR", '{"key":"foo"}'),
    ("append foo xxx", "APPEND", '{"key":"foo","value":"xxx"}'),
    ("get foo", "GET", '{"key":"foo"}'),
    ("mget foo bar", "MGET", '{"key":["foo","bar"]}'),
    ("sadd myset 1 2 3", "SADD", '{"key":"myset","member":["1","2","3"]}'),
    ("sscan myset 0 MATCH [a-z]+ COUNT 10", "SSCAN", '{"key":"myset","cursor":"0","pattern":"[a-z]+","count":"10"}'),
    ("scard myset", "SCARD", '{"key":"myset"}'),
    ("smembers myset", "SMEMBERS", '{"key":"myset"}'),
    ("hmset fooset f1 100 f2 200", "HMSET",
     '{"key":"fooset","field value":[{"field":"f1"},{"value":"100"},{"field":"f2"},{"value":"200"}]}'),
    ("hmget fooset f1 f2", "HMGET", '{"key":"fooset","field":["f1","f2"]}'),
    ("hget fooset f1", "HGET", '{"key":"fooset","field":"f1"}'),
    ("hgetall fooset", "HGETALL", '{"key":"fooset"}'),
    ("watch foo bar", "WATCH", '{"key":["foo","bar"]}'),
    ("unwatch", "UNWATCH", "[]"),
    ("select 0", "SELECT", '{"index":"0"}'),
    ("publish foo test", "PUBLISH", '{"channel":"foo","message":"test"}'),
    ("script load 'return 1'", "SCRIPT LOAD", '{"script":"return 1"}'),
    ("evalsha abc 2 1 1 2 2", "EVALSHA", '{"sha1":"abc","numkeys":"2","key":["1","1"],"value":["2","2"]}'),
    ("lpush ilist 100", "LPUSH", '{"key":"ilist","element":["100"]}'),
    ("lrange ilist 0 1", "LRANGE", '{"key":"ilist","start":"0","stop":"1"}'),
    ("flushall", "FLUSHALL", "[]"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "cmd", "args"), PIXIE_COMMAND_ROWS)
def test_pixie_command_rows(line, cmd, args):
    words = split_inline(line)
    assert words is not None
    assert _as_request(bulk_array(*words)) == (cmd, args)
    # The same command typed inline (telnet style) is the same row.
    assert _as_request(line.encode() + b"\r\n") == (cmd, args)


def test_multi_word_commands_are_named_as_pixie_names_them():
    assert _as_request(bulk_array("client", "setname", "app")) == ("CLIENT SETNAME", '["app"]')
    assert _as_request(bulk_array("CONFIG", "GET", "maxmemory")) == ("CONFIG GET", '{"parameter":"maxmemory"}')
    # Redis 7 commands Pixie's table lacks: known, arguments as an array.
    assert _as_request(bulk_array("LMPOP", "1", "l", "LEFT")) == ("LMPOP", '["1","l","LEFT"]')
    # Not a command: no name, every word in the array (Pixie's FormatAsJSONArray of the payloads).
    assert _as_request(bulk_array("NOSUCH", "x")) == ("", '["NOSUCH","x"]')


# -- RESP3 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"_\r\n", "<NULL>"),
        (b"#t\r\n", "true"),
        (b"#f\r\n", "false"),
        (b",3.25\r\n", "3.25"),
        (b"(3492890328409238509324850943850943825024385\r\n", "3492890328409238509324850943850943825024385"),
        (b"!21\r\nSYNTAX invalid syntax\r\n", "-SYNTAX invalid syntax"),
        (b"=15\r\ntxt:Some string\r\n", "Some string"),
        (b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", '{"first":"1","second":"2"}'),
        (b"~2\r\n+a\r\n+b\r\n", '["a","b"]'),
        # An attribute is metadata in front of the reply: the reply is what shows.
        (b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n", '["2039123","9543892"]'),
        # Nested aggregates are JSON text inside the outer array, as Pixie nests arrays.
        (b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n", '["[\\"1\\"]","x"]'),
    ],
)
def test_resp3_values(data, text):
    assert _as_response(data) == text


def test_resp3_pushes_are_rows_and_subscribe_confirmations_answer_the_command():
    got, st = rows([
        ("req", bulk_array("SUBSCRIBE", "a", "b")),
        ("resp", b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
        ("req", bulk_array("GET", "k")),  # RESP3 allows commands while subscribed
        ("resp", b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"),
        ("resp", b"$1\r\nv\r\n"),
        ("resp", b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"),
    ])  # fmt: skip
    assert got == [
        ("SUBSCRIBE", '{"channel":["a","b"]}', '["subscribe","a","1"]\n["subscribe","b","2"]'),
        ("PUSH PUB", "", '["message","a","hi"]'),
        ("GET", '{"key":"k"}', "v"),
        ("PUSH", "", '["invalidate","[\\"k\\"]"]'),
    ]
    assert not st.errors


# -- pairing ------------------------------------------------------------------------------------
def test_pipelined_commands_pair_in_order_whatever_the_reads():
    reqs = b"".join(bulk_array("INCR", f"k{i}") for i in range(50))
    resps = b"".join(b":%d\r\n" % i for i in range(50))
    expected = [("INCR", f'{{"key":"k{i}"}}', str(i)) for i in range(50)]
    for size in (1, 2, 3, 7, 64, len(reqs)):
        chunks = [("req", reqs[i : i + size]) for i in range(0, len(reqs), size)]
        chunks += [("resp", resps[i : i + size]) for i in range(0, len(resps), size)]
        got, st = rows(chunks)
        assert got == expected, size
        assert not st.errors


def test_unsubscribe_of_every_channel_collects_its_confirmations():
    got, _ = rows([
        ("req", bulk_array("SUBSCRIBE", "a", "b")),
        ("resp", b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
        ("req", bulk_array("UNSUBSCRIBE")),
        ("resp", b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"),
        ("req", bulk_array("PING")),
        ("resp", b"+PONG\r\n"),
    ])  # fmt: skip
    assert got[1] == ("UNSUBSCRIBE", "[]", '["unsubscribe","b","1"]\n["unsubscribe","a","0"]')
    assert got[2] == ("PING", "{}", "PONG")


def test_client_reply_off_and_skip_keep_later_replies_with_their_commands():
    got, st = rows([
        ("req", bulk_array("CLIENT", "REPLY", "SKIP") + bulk_array("SET", "a", "1") + bulk_array("GET", "a")),
        ("resp", b"$1\r\n1\r\n"),
        ("req", bulk_array("CLIENT", "REPLY", "OFF") + bulk_array("INCR", "a") + bulk_array("CLIENT", "REPLY", "ON")),
        ("resp", b"+OK\r\n"),
        ("req", bulk_array("GET", "a")),
        ("resp", b"$1\r\n2\r\n"),
    ])  # fmt: skip
    assert got == [
        ("CLIENT REPLY", '["SKIP"]', ""),
        ("SET", '{"key":"a","value":"1","options":[]}', ""),
        ("GET", '{"key":"a"}', "1"),
        ("CLIENT REPLY", '["OFF"]', ""),
        ("INCR", '{"key":"a"}', ""),
        ("CLIENT REPLY", '["ON"]', "OK"),
        ("GET", '{"key":"a"}', "2"),
    ]
    assert not st.errors


def test_a_reply_that_began_before_the_command_is_never_paired_with_it():
    st = RedisStitcher(OPTIONS)
    assert st.feed_messages(False, b"+OK\r\n", 10) == []  # answers nothing we saw
    assert st.errors["response_without_request"] == 1
    st.feed_messages(True, bulk_array("GET", "a"), 20)
    # A reply whose first byte came before the command was sent answers an older command.
    st._resp.head_ns = 15
    st._resp.buf += b"$1\r\n"
    assert st.feed_messages(False, b"x\r\n", 30) == []
    assert st.errors["response_before_request"] == 1
    pairs = st.feed_messages(False, b"$1\r\ny\r\n", 40)
    assert [(r.req_cmd, r.resp) for r in map(lambda p: make_record(*p), pairs)] == [("GET", "y")]


def test_garbage_from_the_server_drops_the_commands_in_flight_and_pairs_only_new_ones():
    got, st = rows([
        ("req", bulk_array("GET", "a") + bulk_array("GET", "b")),
        ("resp", b"$1\r\n1\r\n?garbage\r\n"),
        ("resp", b"$1\r\n2\r\n"),  # the lost reply to GET b: never paired with anything
        ("req", bulk_array("GET", "c")),
        ("resp", b"$1\r\n3\r\n"),
    ])  # fmt: skip
    assert got == [("GET", '{"key":"a"}', "1"), ("GET", '{"key":"c"}', "3")]
    assert st.errors["response_parse_error"] == 1 and st.errors["request_unanswered_after_error"] == 1


def test_inline_commands_split_like_redis():
    assert split_inline('SET k "hello world"') == ["SET", "k", "hello world"]
    assert split_inline("SET k 'it\\'s'") == ["SET", "k", "it's"]
    assert split_inline('SET k "a\\x41\\n"') == ["SET", "k", "aA\n"]
    assert split_inline("  PING  ") == ["PING"]
    # A NUL ends the line, as in Redis' C string (a NUL once made this loop forever).
    assert split_inline("GET a\x00b c") == ["GET", "a"]
    assert split_inline("\x00") == []
    assert split_inline('SET k "open') is None
    assert split_inline('SET k "a"b') is None


def test_values_beyond_the_body_limit_are_cut_and_counted():
    big = "v" * 5000
    got, _ = rows([("req", bulk_array("SET", "k", big)), ("resp", b"+OK\r\n"),
                   ("req", bulk_array("GET", "k")), ("resp", b"$5000\r\n" + big.encode() + b"\r\n")],
                  ParseOptions(body_limit=100))  # fmt: skip
    assert json.loads(got[0][1])["value"] == "v" * 100 + "<truncated: 5000 bytes>"
    assert got[1][2] == "v" * 100 + "<truncated: 5000 bytes>"


def test_limits_make_garbage_cheap():
    with pytest.raises(resp.Invalid):
        resp.parse(b"*1\r\n" * (resp.MAX_DEPTH + 1))
    with pytest.raises(resp.Invalid):
        resp.parse(b"$99999999999999999\r\n")
    with pytest.raises(resp.Invalid):
        resp.parse(b"$%d\r\n" % (resp.MAX_BULK + 1))
    with pytest.raises(resp.Invalid):
        resp.parse(b"+" + b"x" * (resp.MAX_LINE + 10))
    # A huge announced array of little data asks for more, without allocating for it.
    with pytest.raises(resp.NeedMore):
        resp.parse(b"*2000000000\r\n")


# -- secrets --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("words", "redacted"),
    [
        (["AUTH", "pw"], f'["{SECRET_MARKER}"]'),
        (["AUTH", "user", "pw"], f'{{"username":"{SECRET_MARKER}","password":"{SECRET_MARKER}"}}'),
        (["HELLO", "3", "AUTH", "user", "pw", "SETNAME", "app"],
         f'["3","AUTH","{SECRET_MARKER}","{SECRET_MARKER}","SETNAME","app"]'),
        (["CONFIG", "SET", "requirepass", "pw"], f'{{"parameter":"requirepass","value":"{SECRET_MARKER}"}}'),
        (["MIGRATE", "h", "6379", "k", "0", "100", "AUTH2", "u", "pw"],
         f'["h","6379","k","0","100","AUTH2","{SECRET_MARKER}","{SECRET_MARKER}"]'),
        (["ACL", "SETUSER", "bob", "on", ">pw", "~*"], f'["bob","on",">{SECRET_MARKER}","~*"]'),
    ],
)  # fmt: skip
def test_credentials_are_redacted_unless_kept(words, redacted):
    data = bulk_array(*words)
    got, _ = rows([("req", data), ("resp", b"+OK\r\n")])
    assert got[0][1] == redacted
    assert "pw" not in got[0][1].replace("pwd", "")
    kept, _ = rows([("req", data), ("resp", b"+OK\r\n")], ParseOptions(body_limit=1024, keep_secrets=True))
    assert "pw" in kept[0][1]


# -- inference -----------------------------------------------------------------------------------
def test_inference_needs_a_known_command_in_a_bulk_array():
    assert looks_like_redis_request(bulk_array("PING"))
    assert looks_like_redis_request(bulk_array("get", "k"))
    assert looks_like_redis_request(bulk_array("CLIENT", "SETINFO", "LIB-NAME", "x"))
    assert not looks_like_redis_request(bulk_array("NOTACOMMAND"))
    assert not looks_like_redis_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not looks_like_redis_request(b"HELLO\r\n")  # inline: never makes a connection Redis
    assert not looks_like_redis_request(b"+OK\r\n")
    assert not looks_like_redis_request(b"*1\r\n:1\r\n")
    assert looks_like_redis_response(b"+OK\r\n")
    assert looks_like_redis_response(b"$5000\r\nabc")  # the start of a long reply
    assert not looks_like_redis_response(b"HTTP/1.1 200 OK\r\n")
    assert not looks_like_redis_response(b"$abc\r\n")
    assert not looks_like_redis_response(b"+no line end")


# -- recorded conversations ---------------------------------------------------------------------
def recorded(name: str) -> list[tuple[str, str, str]]:
    stream = load_stream(RECORDED_STREAMS / f"{name}.json")
    records, st = replay(stream.chunks, protocol="redis")
    assert not st.errors, st.errors
    for r in records:
        assert r.latency_ns > 0 or r.req_cmd == "PUSH PUB"
    return [(r.req_cmd, r.req_args, r.resp) for r in records if r.req_cmd not in ("CLIENT", "HELLO")]


# What each recording's client did (tests/agent/record_redis_streams.py) and the replies the
# client got back, as Pixie formats them.
RECORDED = {
    "basic": [
        ("SET", '{"key":"foo","value":"bar","options":[]}', "OK"),
        ("GET", '{"key":"foo"}', "bar"),
        ("HSET", '{"key":"h","field value":[{"field":"f1"},{"value":"v1"},{"field":"f2"},{"value":"v2"}]}', "2"),
        ("HGETALL", '{"key":"h"}', '["f1","v1","f2","v2"]'),
        ("GET", '{"key":"missing"}', "<NULL>"),
        ("RPUSH", '{"key":"list","element":["a","b"]}', "2"),
        ("GET", '{"key":"list"}', "-WRONGTYPE Operation against a key holding the wrong kind of value"),
        ("DEL", '{"key":["foo","h","list"]}', "3"),
    ],
    "pipeline": [
        row
        for i in range(10)
        for row in ((("INCRBY", f'{{"key":"k{i}","increment":"{i}"}}', str(i))), ("GET", f'{{"key":"k{i}"}}', str(i)))
    ]
    + [("DEL", '{"key":[' + ",".join(f'"k{i}"' for i in range(10)) + "]}", "10")],
    "multi_exec": [
        ("MULTI", "[]", "OK"),
        ("INCRBY", '{"key":"counter","increment":"1"}', "QUEUED"),
        ("INCRBY", '{"key":"counter","increment":"10"}', "QUEUED"),
        ("GET", '{"key":"counter"}', "QUEUED"),
        ("EXEC", "[]", '["1","11","11"]'),
        ("DEL", '{"key":["counter"]}', "1"),
    ],
    "pubsub": [
        ("SUBSCRIBE", '{"channel":["news","sport"]}', '["subscribe","news","1"]\n["subscribe","sport","2"]'),
        ("PUSH PUB", "", '["message","news","hello"]'),
        ("PUSH PUB", "", '["message","sport","goal"]'),
        ("UNSUBSCRIBE", "[]", "(checked in the test: the order is the server's)"),
    ],
    "resp3": [
        ("HSET", '{"key":"h3","field value":[{"field":"a"},{"value":"1"},{"field":"b"},{"value":"2"}]}', "2"),
        ("HGETALL", '{"key":"h3"}', '{"a":"1","b":"2"}'),
        ("SADD", '{"key":"s3","member":["x"]}', "1"),
        ("SMEMBERS", '{"key":"s3"}', '["x"]'),
        ("GET", '{"key":"nothing"}', "<NULL>"),
        ("DEL", '{"key":["h3","s3"]}', "2"),
    ],
    "auth": [
        ("AUTH", f'["{SECRET_MARKER}"]', "OK"),
        ("SET", '{"key":"guarded","value":"yes","options":[]}', "OK"),
        ("GET", '{"key":"guarded"}', "yes"),
    ],
    "hello_auth": [
        ("SET", '{"key":"guarded","value":"yes","options":[]}', "OK"),
        ("GET", '{"key":"guarded"}', "yes"),
    ],
    "inline": [
        ("PING", "{}", "PONG"),
        ("SET", '{"key":"greeting","value":"hello world","options":[]}', "OK"),
        ("GET", '{"key":"greeting"}', "hello world"),
        ("DEL", '{"key":["greeting"]}', "1"),
    ],
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_conversations(name):
    got = recorded(name)
    expected = RECORDED[name]
    if name == "pubsub":
        # UNSUBSCRIBE of every channel: the server picks the order of its confirmations; the
        # last one says no subscription is left.
        unsub = got.pop()
        expected = expected[:-1]
        lines = [json.loads(line) for line in unsub[2].split("\n")]
        assert unsub[:2] == ("UNSUBSCRIBE", "[]")
        assert sorted(channel for _, channel, _ in lines) == ["news", "sport"]
        assert [(kind, left) for kind, _, left in lines] == [("unsubscribe", "1"), ("unsubscribe", "0")]
    assert got == expected


def test_recorded_hello_auth_hides_the_password_and_shows_it_when_kept():
    stream = load_stream(RECORDED_STREAMS / "hello_auth.json")
    assert b"recorded-fake-password" in stream.side("req")
    records, _ = replay(stream.chunks, protocol="redis")
    hello = records[0]
    assert (hello.req_cmd, hello.req_args) == ("HELLO", f'["3","AUTH","{SECRET_MARKER}","{SECRET_MARKER}"]')
    assert json.loads(hello.resp)["proto"] == "3"
    st = RedisStitcher(ParseOptions(body_limit=1024, keep_secrets=True))
    kept, _ = replay(stream.chunks, st, protocol="redis")
    assert kept[0].req_args == '["3","AUTH","default","recorded-fake-password"]'


def test_unsubscribe_seen_by_a_stitcher_that_missed_the_subscribe_keeps_every_confirmation():
    """A stitcher started after a gap, between SUBSCRIBE and UNSUBSCRIBE (once it took the first
    confirmation as the whole reply and counted the second as unmatched)."""
    got, st = rows([
        ("req", bulk_array("UNSUBSCRIBE")),
        ("resp", b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n"),
        ("resp", b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"),
    ])  # fmt: skip
    assert got == [("UNSUBSCRIBE", "[]", '["unsubscribe","b","1"]\n["unsubscribe","a","0"]')]
    assert not st.errors
