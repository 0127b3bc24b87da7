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


CANCEL = """
    import os, sys, time
    from turbolift import on

    @on()
    def ticker(path, seconds):
        '''Appends a line every 50 ms for `seconds`: a cancelled call stops writing.'''
        deadline = time.monotonic() + seconds
        with open(path, "a") as handle:
            while time.monotonic() < deadline:
                handle.write(".")
                handle.flush()
                time.sleep(0.05)
        return "finished"

    @on(timeout=3.0)
    def starts_a_long_nested_call(path):
        return ticker.submit(path, 60).result()

    path = os.path.abspath("ticks")
    try:
        starts_a_long_nested_call(path)
        print("no timeout")
    except TimeoutError:
        print("outer timed out")
    time.sleep(2.0)                    # the nested call is cancelled meanwhile
    size = os.path.getsize(path)
    time.sleep(2.0)
    print("still growing" if os.path.getsize(path) > size else "stopped", size)
"""


def test_timing_out_the_outer_call_cancels_the_nested_call_it_started(tmp_path, cache_dir):
    write_files(tmp_path, {"cancel.py": CANCEL})
    done = run_python(["-m", "turbolift", "--workers", "2", "cancel.py"], tmp_path, cache_dir, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "outer timed out"
    verdict, size = lines[1].split()
    assert int(size) > 0 and verdict == "stopped", done.stdout   # it ran, then was stopped


NESTED_INPUT_ERROR = """
    import json
    from turbolift import on

    @on()
    def double(x):
        return 2 * x

    def numbers():
        yield from range(3)
        raise KeyError("input broke at 3")

    class Resumes:   # goes on after its StopIteration: a map ends at the first one, as locally
        def __init__(self):
            self.n = 0
        def __iter__(self):
            return self
        def __next__(self):
            self.n += 1
            if self.n == 4 or self.n > 100:
                raise StopIteration
            return self.n

    @on()
    def outer():
        got = []
        try:
            for value in double.map(numbers()):   # a map made on a worker: nested calls
                got.append(value)
        except KeyError as exc:
            return got, str(exc), list(double.map(Resumes()))
        return got, None, None

    print(json.dumps(outer()))
"""


def test_a_map_made_on_a_worker_keeps_its_inputs_error_in_place_and_ends_at_first_stop(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": NESTED_INPUT_ERROR})
    expected = [[0, 2, 4], "'input broke at 3'", [2, 4, 6]]
    local = run_python(["app.py"], tmp_path, cache_dir)
    assert json.loads(local.stdout) == expected, local.stderr
    remote = run_python(["-m", "turbolift", "--workers", "2", "app.py"], tmp_path, cache_dir, timeout=180)
    assert json.loads(remote.stdout) == expected, remote.stderr
