"""glibc's allocator settings (turbolift._wire.allocator): applied on glibc, and left alone when asked.

The speed and memory they buy are the benchmarks' and the chaos test's to show; this checks the
switches the README promises, in fresh processes (each sets them at most once).
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = "from turbolift._wire import allocator; print(allocator.tune(), allocator.bound())"

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")


def probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "TURBOLIFT_TUNE_MALLOC")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@glibc_only
def test_the_settings_apply_on_glibc():
    assert probe() == "True True"


@glibc_only
@pytest.mark.parametrize("env", [{"TURBOLIFT_TUNE_MALLOC": "0"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=262144"}])
def test_a_process_that_sets_malloc_itself_or_turns_them_off_is_left_alone(env):
    assert probe(**env) == "False False"


HANDED_BACK = """
import sys, threading, time
from turbolift._wire import allocator
if sys.argv[1] == "no-trimmer":
    allocator._trim_forever = lambda libc: None   # what bound() did before the trimmer: settings only

def rss():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS"))

assert allocator.bound()
base = rss()
payloads, pins = [], []

def receive():   # as threads receiving 1 MiB results do, with smaller buffers kept in between
    for _ in range(50):
        payloads.append(b"x" * (1 << 20))
        pins.append(b"y" * 100_000)

threads = [threading.Thread(target=receive) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
held = rss() - base
payloads.clear()
deadline = time.monotonic() + 10
while rss() - base > held // 4 and time.monotonic() < deadline:
    time.sleep(0.1)
print(held >> 20, (rss() - base) >> 20)
"""


@glibc_only
@pytest.mark.parametrize("variant", ["trimmer", "no-trimmer"])
def test_a_calling_program_gets_freed_payload_memory_back_within_seconds(variant):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "TURBOLIFT_TUNE_MALLOC")}
    done = subprocess.run([sys.executable, "-c", HANDED_BACK, variant], env=clean, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    held, left = (int(part) for part in done.stdout.split())
    assert held >= 150, f"the probe held only {held} MiB: it measures nothing"
    if variant == "trimmer":
        assert left <= held // 4, f"{left} of {held} MiB still resident 10 s after the payloads were freed"
    else:   # the control: without the trimmer the same settings keep it (so the check above can fail)
        assert left > held // 2, f"{left} of {held} MiB resident: the control no longer holds memory"
