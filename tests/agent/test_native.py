"""pxq's C extension (pxq/agent/_native.c): the ring buffer walk and the HTTP/1 plain framing on
crafted input, against what the input was built to hold (the ring) and against the regular
expressions the Python plain path used before the C one replaced it (the framing; that path was
itself checked against llhttp, as tests/agent/test_http1_plain.py checks the C one now). Then the
same input through a build with AddressSanitizer and UndefinedBehaviorSanitizer: no fault, no
leak, the same answers."""

from __future__ import annotations

import importlib.util
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pxq.agent import native
from tests.agent import native_scenarios as scenarios

ROOT = Path(__file__).resolve().parents[2]


def load_builder():
    spec = importlib.util.spec_from_file_location("build_native", ROOT / "tools" / "build_native.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode(raw: bytes) -> tuple:
    """An event as SockEvent's fields, decoded independently of the C walk."""
    fields = scenarios.EVENT.unpack_from(raw)
    return (*fields, raw[scenarios.EVENT.size :])


def expected(*records: tuple[int, bytes]) -> list[tuple]:
    return [decode(scenarios.event_bytes(i, data)) for i, data in records]


def read_case(name: str, limit: int | None = None):
    for case, make, case_limit in scenarios.ring_cases():
        if case == name:
            ring = make()
            return ring, ring.read(native, case_limit if limit is None else limit)
    raise KeyError(name)


def test_ring_walk_takes_committed_records_in_order():
    ring, (counts, events, consumer) = read_case("plain")
    assert counts == (3, 0) and consumer == ring.prod
    assert events == expected((0, b"GET / HTTP/1.1\r\n\r\n"), (1, b""), (2, b"x" * 100))


def test_ring_walk_passes_discarded_records_and_stops_at_one_being_written():
    ring, (counts, events, consumer) = read_case("discard_and_busy")
    assert counts == (1, 0) and events == expected((1, b"one"))
    busy_at = (8 + 88 + 3 + 7) // 8 * 8 + (8 + 88 + 4 + 7) // 8 * 8  # the third record's position
    assert consumer == busy_at
    assert ring.read(native) == ((0, 0), [], busy_at)  # still being written


def test_ring_walk_reads_a_record_across_the_end_of_the_data_area():
    ring, (counts, events, consumer) = read_case("wraps")
    assert counts == (3, 0) and consumer == ring.prod
    assert events == expected((1, b"a"), (2, bytes(range(200))), (3, b"b"))


def test_records_no_kernel_writes_are_consumed_and_counted_never_decoded():
    ring, (counts, events, consumer) = read_case("truncated")
    assert counts == (2, 2) and events == expected((1, b"before"), (2, b"after")) and consumer == ring.prod
    ring, (counts, events, consumer) = read_case("runs_past_producer")
    assert counts == (1, 1) and events == expected((1, b"ok")) and consumer == ring.prod
    for name in ("longer_than_ring", "positions_apart", "near_the_top"):
        ring, (counts, events, consumer) = read_case(name)
        assert (counts, events, consumer) == ((0, 1), [], ring.prod), name


def test_ring_walk_takes_at_most_limit_records():
    ring, (counts, events, consumer) = read_case("limited")
    assert counts == (2, 0) and events == expected((0, b"0"), (1, b"1"))
    assert ring.read(native) == ((3, 0), expected((2, b"2"), (3, b"3"), (4, b"4")), ring.prod)
    ring, (counts, events, consumer) = read_case("limit_zero")
    assert (counts, events, consumer) == ((0, 0), [], 0)


def test_ring_walk_refuses_buffers_that_cannot_be_a_ring():
    ring = scenarios.Ring()
    with pytest.raises(ValueError):
        native.ring_read(ring.producer, ring.consumer, scenarios.DATA_AT, 3 * scenarios.RING_SIZE, 9, [], tuple)
    with pytest.raises(ValueError):
        native.ring_read(ring.producer[:100], ring.consumer, scenarios.DATA_AT, scenarios.RING_SIZE, 9, [], tuple)
    with pytest.raises(TypeError):  # the consumer position is written
        native.ring_read(ring.producer, bytes(ring.consumer), scenarios.DATA_AT, scenarios.RING_SIZE, 9, [], tuple)


# The Python plain path's expressions, as they were before _native.c replaced them (pxq commit 284ab5b,
# pxq/agent/protocols/http1/stitcher.py): the reference for frame_plain.
_REQUEST_LINE = re.compile(
    rb"(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS) (/[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]*) HTTP/1\.1\r\n"
)
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9]) ([!-~]+(?: [!-~]+)*)\r\n")
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[ \t]*(?:[!-~][\t -~]*)?\r\n)*")
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*((?:[!-~][\t -~]*)?)\r\n")


def reference_frame(data: bytes, at: int, is_request: bool):
    head_end = data.find(b"\r\n\r\n", at)
    if head_end < 0:
        return None
    line = (_REQUEST_LINE if is_request else _STATUS_LINE).match(data, at, head_end + 2)
    if line is None:
        return None
    block = data[line.end() : head_end + 2]
    if _HEADER_BLOCK.fullmatch(block) is None:
        return None
    pairs = _HEADER.findall(block)
    length = -1
    for name, value in pairs:
        key = name.lower()
        if key in (b"transfer-encoding", b"content-encoding", b"upgrade"):
            return None
        if key == b"connection" and value.lower() != b"keep-alive":
            return None
        if key == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 15:
                return None
            length = int(value)
    first = line.group(1) if is_request else int(line.group(1))
    return first, line.group(2), pairs, block, length, head_end + 4


def test_frame_plain_frames_what_the_python_expressions_framed():
    inputs = scenarios.http_inputs(seed=5, count=3000)
    framed = 0
    for attempt in ("parsed", "from the cache"):
        for data, at, is_request in inputs:
            want = reference_frame(data, at, is_request)
            assert native.frame_plain(data, at, is_request) == want, (data, at, is_request, attempt)
            framed += want is not None
    assert framed > 200  # the whole and mutated heads include many plain ones


def test_frame_plain_hands_out_a_new_list_of_pairs_each_time():
    head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    first, second = native.frame_plain(head, 0, True), native.frame_plain(head, 0, True)
    first[2].append((b"X", b"y"))  # llhttp's callbacks append to a message's list: never shared
    assert second[2] == [(b"Host", b"x")] and second[3] is first[3]  # the block's bytes are shared


def test_header_blocks_that_might_hold_credentials_are_never_kept():
    native.clear_plain_block_cache()
    secrets = [b"Authorization: Bearer s3cr3t\r\n", b"proxy-AUTHORIZATION: Basic s3cr3t\r\n",
               b"Cookie: id=s3cr3t\r\n", b"X-A: s3cr3t\r\nset-cookie: a=b\r\n",
               b"Transfer-Encoding: s3cr3t\r\nCookie: a\r\n"]  # fmt: skip
    for block in secrets:
        for _ in range(2):
            native.frame_plain(b"GET / HTTP/1.1\r\nHost: x\r\n" + block + b"\r\n", 0, True)
    native.frame_plain(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, True)
    native.frame_plain(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 0, True)
    kept = native.plain_block_cache()
    assert sorted(kept) == [b"Host: x\r\n", b"Transfer-Encoding: chunked\r\n"]  # plain or not, kept


def test_frame_plain_examples():
    got = native.frame_plain(b"xxPOST /p HTTP/1.1\r\nContent-Length: 5\r\nX:  a b \r\n\r\nhello", 2, True)
    assert got == (
        b"POST",
        b"/p",
        [(b"Content-Length", b"5"), (b"X", b"a b ")],
        b"Content-Length: 5\r\nX:  a b \r\n",
        5,
        51,
    )
    assert native.frame_plain(b"HTTP/1.1 404 Not Found\r\n\r\n", 0, False) == (404, b"Not Found", [], b"", -1, 26)
    with pytest.raises(IndexError):
        native.frame_plain(b"GET", 4, True)


def test_frame_message_makes_the_stitchers_message_and_refuses_another_class():
    from pxq.agent.protocols.http1.stitcher import _Message

    post = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET"
    msg, next_at = native.frame_message(post, 0, True, 0, 3, 99, 4)
    assert type(msg) is _Message and next_at == len(post) - 3
    want = dict(url=b"/p", method=b"POST", body=b"hel", body_size=5, start_ns=99, end_ns=99, epoch=4, status=0)
    assert {name: getattr(msg, name) for name in want} == want
    assert (
        msg.complete and msg.headers_done and msg.decoder is False and msg.header_pairs == [(b"Content-Length", b"5")]
    )

    class Other:
        __slots__ = ("body_limit", "start_ns")

    with pytest.raises(TypeError, match="update MESSAGE_SLOTS"):
        native.set_message_type(Other)
    assert type(native.frame_message(post, 0, True, 0, 3, 99, 4)[0]) is _Message  # still the stitcher's


ASAN_RUN = """
import importlib.util, pickle, sys, tracemalloc, gc
spec = importlib.util.spec_from_file_location("_native", sys.argv[1])
asan_native = importlib.util.module_from_spec(spec)
spec.loader.exec_module(asan_native)
from tests.agent import native_scenarios as scenarios
answers = scenarios.run_all(asan_native)
answers_again = scenarios.run_all(asan_native)  # header blocks from the cache this time
assert answers_again == answers
tracemalloc.start()
scenarios.run_all(asan_native, seed=1, count=100, tracker=False)
asan_native.clear_plain_block_cache()  # what it keeps is bounded, not a leak: not counted
gc.collect()
before = tracemalloc.get_traced_memory()[0]
for seed in range(2, 6):
    scenarios.run_all(asan_native, seed=seed, count=100, tracker=False)
asan_native.clear_plain_block_cache()
gc.collect()
growth = tracemalloc.get_traced_memory()[0] - before
batch_growth = scenarios.http1_batch_growth(asan_native, range(2, 6), 25)
with open(sys.argv[2], "wb") as f:
    pickle.dump((answers, growth, batch_growth), f)
"""


def test_native_code_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    cc = shutil.which("gcc")
    assert cc, "gcc is installed by tools/setup.sh"
    libasan = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    assert Path(libasan).is_file(), f"no libasan.so for {cc}"
    sanitize = (
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        "-Werror",
    )
    built = load_builder().build(sys.executable, out_dir=tmp_path, extra_flags=sanitize)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "LD_PRELOAD": libasan,  # ASan's runtime first, before the interpreter's own allocations
        "PYTHONMALLOC": "malloc",  # every Python object from malloc: ASan sees overruns of them
        # Python's own allocations live until exit: leaks are measured with tracemalloc instead.
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    out = tmp_path / "answers.pickle"
    run = subprocess.run(
        [sys.executable, "-c", ASAN_RUN, str(built), str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "runtime error" not in run.stderr, run.stderr[-4000:]
    answers, growth, batch_growth = pickle.loads(out.read_bytes())
    native.clear_plain_block_cache()
    assert answers == scenarios.run_all(native)  # the same answers as the regular build
    # The tracker's C path gave what its Python path gives, on every crafted script.
    assert all(same for (_, same) in answers[-len(scenarios.tracker_scripts(14, 50)) :])
    # Four more rounds (about 1,600 ring walks and 7,000 framings, a few hundred of them plain):
    # nothing stays (0 bytes when measured); one header pair leaked per plain message is 30 KiB.
    assert growth < 4096, growth
    # Four rounds of 25 tracker scripts (a few hundred events taken in C, a hundred rows): nothing
    # its calls allocated stays; one request message leaked per exchange would be some 40 KiB.
    assert batch_growth < 1024, batch_growth


def test_a_missing_or_stale_build_is_an_import_error_naming_the_setup_step(tmp_path):
    package = tmp_path / "pxq" / "agent"
    package.mkdir(parents=True)
    for init in (tmp_path / "pxq" / "__init__.py", package / "__init__.py"):
        init.write_text("")
    shutil.copy(ROOT / "pxq" / "agent" / "native.py", package)
    shutil.copy(ROOT / "pxq" / "agent" / "_native.c", package)
    probe = [sys.executable, "-S", "-c", "import pxq.agent.native"]  # -S, cwd: no other pxq on the path
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    missing = subprocess.run(probe, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 1 and "is not built" in missing.stderr and "tools/setup.sh" in missing.stderr
    shutil.copy(native._native.__file__, package)
    assert subprocess.run(probe, env=env, capture_output=True, text=True, cwd=tmp_path).returncode == 0
    with (package / "_native.c").open("a") as source:
        source.write("/* edited after the build */\n")
    stale = subprocess.run(probe, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert stale.returncode == 1 and "built from another _native.c" in stale.stderr and "tools/setup.sh" in stale.stderr
