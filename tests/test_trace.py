"""`turbolift trace`: a local dry run that reports what distributing the program would cost."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_python, write_files

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "app.py"


def report_of(stderr: str) -> dict:
    return json.loads(stderr[stderr.index("{"):])


def test_trace_of_the_example_reports_calls_bundle_sizes_and_an_estimate(tmp_path, cache_dir):
    shutil.copy(EXAMPLE, tmp_path / "app.py")
    done = run_python(["-m", "turbolift", "trace", "--json", "app.py"], tmp_path, cache_dir, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "one call: 333283335000" in done.stdout   # the program ran, as it would locally
    (entry,) = report_of(done.stderr).values()
    assert entry["calls"] == 1 + 10 + 2000 + 1 and entry["map_items"] == 2000
    assert entry["bundle"]["files"] >= 1 and entry["bundle"]["bytes"] > 0
    assert 0 < entry["argument_bytes"]["median"] <= entry["argument_bytes"]["largest"] < 100
    assert entry["local_seconds"] < entry["estimated_distributed_seconds"]
    human = run_python(["-m", "turbolift", "trace", "app.py"], tmp_path, cache_dir, timeout=180)
    assert "__main__.crunch: 2012 call(s), 2000 of them items of map" in human.stderr
    assert "distributed (one worker, estimated)" in human.stderr


def test_trace_warns_of_calls_too_short_to_gain_and_of_what_cannot_travel(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": """
        import sys, threading
        from turbolift import on

        @on()
        def tiny(x):
            return x + 1

        @on()
        def big(n):
            return b"x" * n

        @on()
        def takes_lock(lock):
            return 1

        print([tiny(i) for i in range(50)], len(big(3_000_000)), takes_lock(threading.Lock()))
        print("grpc loaded:", "grpc" in sys.modules)
    """})
    done = run_python(["-m", "turbolift", "trace", "--json", "app.py"], tmp_path, cache_dir, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "grpc loaded: False" in done.stdout   # nothing was deployed: no transport even imported
    found = report_of(done.stderr)
    assert found["__main__.tiny"]["too_short"] is True and found["__main__.tiny"]["calls"] == 50
    assert found["__main__.big"]["result_bytes"]["largest"] > 3_000_000
    assert "lock" in found["__main__.takes_lock"]["unsendable"]
    human = run_python(["-m", "turbolift", "trace", "app.py"], tmp_path, cache_dir, timeout=180)
    assert "warning: its calls take" in human.stderr and "warning: would fail distributed" in human.stderr
