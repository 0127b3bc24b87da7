"""Bounded load while a worker dies: 20,000 calls, 64 in flight, every result exactly once.

Runs ``benchmarks/load_test.py`` (the same code as ``python -m
benchmarks.load_test``) over ``LocalQueue(workers=2)``: real worker
processes, real sockets, one of them SIGKILLed once 30% of the calls have
completed. The figures (calls/s, p50/p99 latency, retries, peak RSS of the
workers) are printed with the test's output.
"""
from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO

if str(REPO) not in sys.path:  # `pytest` run from elsewhere: make the benchmarks package importable
    sys.path.insert(0, str(REPO))

from benchmarks import load_test  # noqa: E402

CALLS = 20_000
IN_FLIGHT = 64
TIME_LIMIT = 150.0  # seconds of submitting; ~10-20 s are expected on two busy cores


@pytest.mark.timeout(300)
def test_every_call_returns_its_correct_result_exactly_once_while_a_worker_is_killed(tmp_path, capsys):
    """20,000 calls, 64 in flight, a worker SIGKILLed after 30%: none lost, none duplicated, all correct.

    Also proves the kill mattered: the killed worker had served calls, some
    calls were retried (no more than were in flight), and LocalQueue replaced it.
    """
    figures = load_test.run(calls=CALLS, in_flight=IN_FLIGHT, workers=2, kill_at=0.3, time_limit=TIME_LIMIT,
                            cache_dir=str(tmp_path / "cache"))
    (tmp_path / "load.json").write_text(json.dumps(figures, indent=1))
    with capsys.disabled():
        print("\n" + load_test.summary(figures))

    assert not figures["time_limited"], f"only {figures['submitted']:,} calls were sent in {TIME_LIMIT:.0f} s"
    assert figures["drained"], "calls still in flight long after the last was sent"
    assert figures["completed"] == CALLS
    assert figures["missing"]["count"] == 0, figures["missing"]
    assert figures["duplicated"]["count"] == 0, figures["duplicated"]
    assert figures["wrong"]["count"] == 0, figures["wrong"]
    assert figures["errors"]["count"] == 0, figures["errors"]
    assert figures["in_flight_seen"]["max"] <= IN_FLIGHT

    kill = figures["kill"]
    assert kill and kill["after_completed"] >= 0.3 * CALLS
    assert kill["served_by_victim"] > 0, "the killed worker had served no call: the kill proved nothing"
    assert kill["replaced"], f"the killed worker was not replaced: {figures['worker_pids']}"
    assert sum(figures["served_by"].values()) == CALLS
    # The calls in flight to the killed worker were sent again, and only those.
    assert 1 <= figures["retries"] <= kill["in_flight_at_kill"] + IN_FLIGHT, figures["retries"]
    assert figures["correct"]
