"""Marked functions that call marked functions from a worker: the calls reach the cluster."""
from __future__ import annotations

import json

from conftest import run_python, write_files

TREE = """
    import json, os, sys, time
    from turbolift import _runtime, on

    @on()
    def leaf(n):
        time.sleep(0.01)
        return n, os.getpid()

    @on()
    def tree(depth, fanout, start=0):
        '''A recursive fan-out: `fanout` subtrees per node, leaves numbered from `start`.'''
        if depth == 0:
            return [leaf(start)]
        width = fanout ** (depth - 1)
        parts = tree.map([depth - 1] * fanout, [fanout] * fanout, [start + i * width for i in range(fanout)])
        return [found for part in parts for found in part]

    @on(timeout=2.0)
    def sleeper(seconds):
        time.sleep(seconds)
        return "woke"

    @on(timeout=120)
    def waits_on(seconds):
        return sleeper(seconds)

    leaves = tree(4, 3)
    try:
        waits_on(30)
        deadline = "no timeout"
    except TimeoutError as exc:
        deadline = "TimeoutError"
    print(json.dumps({"leaves": leaves, "workers": _runtime.worker_pids(), "me": os.getpid(),
                      "deadline": deadline, "after": waits_on(0)}))
"""


def test_a_tree_with_more_waiting_calls_than_slots_finishes_on_every_worker(tmp_path, cache_dir):
    """121 calls of `tree` (40 of them waiting on nested calls at once) and 81 leaves, on 2 workers
    of 16 slots: waiting calls give up their slots, so the tree never deadlocks, and its leaves reach
    every worker. A nested call keeps its own deadline."""
    write_files(tmp_path, {"tree.py": TREE})
    done = run_python(["-m", "turbolift", "--workers", "2", "tree.py"], tmp_path, cache_dir, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert [n for n, _ in found["leaves"]] == list(range(81))
    ran_on = {pid for _, pid in found["leaves"]}
    assert ran_on == set(found["workers"]) and found["me"] not in ran_on
    assert found["deadline"] == "TimeoutError" and found["after"] == "woke"
