"""Timing whole programs: start, first result, exit.

A run is timed from just before ``Popen`` to the moment its stdout shows a
line starting with a marker (the first result) and to its exit, with
``time.perf_counter`` in the suite's own process, so nothing depends on
clocks agreeing across processes. Stderr goes to a file (a full pipe never
stalls the child) and is quoted when the run fails. A run that outlives its
timeout is killed and reported as a failure.
"""
from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Optional


@dataclass
class Run:
    first_result: Optional[float]   # seconds from start to the marker line, None if never seen
    exit: float                     # seconds from start to exit
    returncode: int
    stdout: str
    stderr: str


class RunFailed(RuntimeError):
    pass


def timed_run(command: list, *, cwd: str, env: dict, marker: str = "result",
              timeout: float = 120.0) -> Run:
    """Run ``command`` to completion; raise :class:`RunFailed` unless it exits 0."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=err)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        first = None
        lines = []
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                if first is None and raw.startswith(marker.encode()):
                    first = time.perf_counter() - start
                lines.append(raw.decode(errors="replace"))
            returncode = process.wait()
            finished = time.perf_counter() - start
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    run = Run(first, finished, returncode, "".join(lines), stderr)
    if returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RunFailed(f"{' '.join(command)} exited with {returncode} after {finished:.1f}s:\n{tail}")
    return run
