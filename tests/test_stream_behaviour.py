"""The Session streams a caller keeps per worker: what they do, not how fast.

Each test runs real workers and checks that every call gives exactly one
result (its future settles once, and the worker ran it once when no worker
was lost), whatever else happens on the same connection meanwhile.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import distributed_on

from turbolift import on


def logged(log, call_id, seconds=0.0, data=b""):
    """Note that ``call_id`` ran (one line, appended atomically), nap, return what it got."""
    with open(log, "a") as handle:
        handle.write(f"{call_id} {os.getpid()}\n")
    time.sleep(seconds)
    return call_id, len(data), os.getpid()


def lines(log: Path) -> list:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def ran(log: Path) -> Counter:
    """How many times each call id ran."""
    return Counter(call_id for call_id, _ in lines(log))


def settle_once(futures):
    """Attach a callback to each future; return the Counter of times each one ran."""
    settled = Counter()
    lock = threading.Lock()

    def note(future):
        with lock:
            settled[future] += 1

    for future in futures:
        future.add_done_callback(note)
    return settled


@pytest.fixture
def one_worker(tmp_path):
    with distributed_on(1, tmp_path / "cache") as queue:
        yield queue


def test_many_concurrent_calls_each_give_one_result(one_worker, tmp_path):
    log = tmp_path / "ran"
    f = on(timeout=300)(logged)
    futures = [f.submit(str(log), str(i), 0.001 * (i % 7)) for i in range(400)]
    settled = settle_once(futures)
    results = [future.result(timeout=300) for future in futures]
    time.sleep(0.2)
    assert [r[0] for r in results] == [str(i) for i in range(400)]
    assert set(settled.values()) == {1} and len(settled) == 400
    assert ran(log) == Counter(str(i) for i in range(400))   # each ran exactly once


def test_a_cancelled_call_ends_and_the_streams_serve_on(one_worker, tmp_path):
    log = tmp_path / "ran"
    f = on(timeout=300)(logged)
    slow = f.submit(str(log), "slow", 30.0)
    deadline = time.monotonic() + 60
    while "slow" not in ran(log) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slow.cancel() or slow.cancelled() or slow.done()
    with pytest.raises(cf.CancelledError):
        slow.result(timeout=60)
    assert [f(str(log), str(i))[0] for i in range(20)] == [str(i) for i in range(20)]
    assert ran(log)["slow"] == 1 and all(ran(log)[str(i)] == 1 for i in range(20))


def test_a_deadline_ends_its_call_and_the_stream_is_reused(one_worker, tmp_path):
    log = tmp_path / "ran"
    with pytest.raises(TimeoutError):
        on(timeout=0.5)(logged)(str(log), "late", 30.0)
    started = time.monotonic()
    assert on(timeout=300)(logged)(str(log), "next")[0] == "next"
    # The worker interrupted the late call: the next one did not wait 30 s for it.
    assert time.monotonic() - started < 25
    assert ran(log) == Counter({"late": 1, "next": 1})


def test_a_call_whose_worker_dies_mid_stream_gives_one_result(tmp_path):
    log = tmp_path / "ran"
    with distributed_on(2, tmp_path / "cache") as queue:
        f = on(timeout=300, retries=2)(logged)
        assert {f(str(log), "warm")[2] for _ in range(4)} == set(queue.pids())
        victim_call = f.submit(str(log), "victim", 5.0)
        others = [f.submit(str(log), str(i), 0.01) for i in range(50)]
        settled = settle_once([victim_call, *others])
        deadline = time.monotonic() + 60
        while "victim" not in ran(log) and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = next(int(pid) for call_id, pid in lines(log) if call_id == "victim")
        os.kill(victim, signal.SIGKILL)
        call_id, _, pid = victim_call.result(timeout=300)
        assert call_id == "victim" and pid != victim
        assert [o.result(timeout=300)[0] for o in others] == [str(i) for i in range(50)]
        time.sleep(0.2)
        assert set(settled.values()) == {1}
        assert ran(log)["victim"] == 2   # once on the killed worker, once on the one it was retried on


def test_a_very_large_argument_beside_small_calls(one_worker, tmp_path):
    log = tmp_path / "ran"
    f = on(timeout=600)(logged)
    big = os.urandom(200 * 1024 * 1024)
    large = f.submit(str(log), "large", 0.0, big)
    small = [f.submit(str(log), str(i)) for i in range(100)]
    settled = settle_once([large, *small])
    assert [s.result(timeout=600)[0] for s in small] == [str(i) for i in range(100)]
    assert large.result(timeout=600)[:2] == ("large", len(big))
    time.sleep(0.2)
    assert set(settled.values()) == {1}
    assert ran(log) == Counter({"large": 1, **{str(i): 1 for i in range(100)}})
