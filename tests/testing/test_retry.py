"""remove_until_deadline (pxq/testing/retry.py): a removal that fails for a while is retried until
it succeeds; one that keeps failing raises its last error once the deadline has passed. The clock
is a fake one advanced by the fake sleep, so no assertion depends on the wall clock."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pxq.testing.retry import remove_until_deadline, wait_for


class FakeClock:
    """Time that moves only when the code under test sleeps; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_removal_failing_a_few_times_is_retried_until_it_succeeds(tmp_path: Path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "still-written").write_text("x")
    clock = FakeClock()
    attempts: list[int] = []

    def remove() -> None:
        attempts.append(1)
        if len(attempts) == 3:  # the writer is gone by the third try
            (busy / "still-written").unlink()
        busy.rmdir()  # a real ENOTEMPTY until then

    remove_until_deadline(remove, timeout=10, interval=0.05, clock=clock, sleep=clock.sleep)
    assert not busy.exists()
    assert len(attempts) == 3
    assert clock.sleeps == [0.05, 0.05]


def test_a_removal_that_never_succeeds_raises_its_last_error_after_the_deadline():
    clock = FakeClock()
    errors: list[OSError] = []

    def remove() -> None:
        errors.append(OSError(errno.EBUSY, f"busy, try {len(errors) + 1}"))
        raise errors[-1]

    with pytest.raises(OSError) as raised:
        remove_until_deadline(remove, timeout=1.0, interval=0.25, clock=clock, sleep=clock.sleep)
    assert raised.value is errors[-1]
    # Tries at 0, 0.25, 0.5, 0.75, 1.0 are within the deadline; the one at 1.25 is past it.
    assert len(errors) == 6
    assert sum(clock.sleeps) == pytest.approx(1.25)


def test_what_is_gone_already_counts_as_removed(tmp_path: Path):
    clock = FakeClock()
    remove_until_deadline((tmp_path / "never-made").rmdir, timeout=10, interval=0.05, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_an_error_is_raised_with_a_short_real_deadline(tmp_path: Path):
    """The default clock and sleep: the deadline ends the retries (no assertion on how long it took)."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "kept").write_text("x")
    with pytest.raises(OSError) as raised:
        remove_until_deadline(busy.rmdir, timeout=0.05, interval=0.01)
    assert raised.value.errno == errno.ENOTEMPTY
    assert busy.exists() and os.listdir(busy) == ["kept"]


def test_wait_for_gives_the_conditions_first_true_value():
    answers = iter([None, [], ["rows"], ["later"]])
    assert wait_for(lambda: next(answers), timeout=10, what="rows", interval=0.001) == ["rows"]


def test_wait_for_names_what_never_came():
    with pytest.raises(AssertionError, match="not within 0.05 s: the rows"):
        wait_for(lambda: [], timeout=0.05, what="the rows", interval=0.01)
