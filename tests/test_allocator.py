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


def run_probe(code: str, *args: str, timeout: float = 60, **env: str) -> str:
    """The output of ``code`` in a fresh interpreter whose environment sets nothing of glibc's malloc
    but ``env``."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "TURBOLIFT_TUNE_MALLOC")}
    done = subprocess.run([sys.executable, "-c", code, *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def probe(**env: str) -> str:
    return run_probe(PROBE, **env)


@glibc_only
def test_the_settings_apply_on_glibc():
    assert probe() == "True True"


@glibc_only
@pytest.mark.parametrize("env", [{"TURBOLIFT_TUNE_MALLOC": "0"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=262144"}])
def test_a_process_that_sets_malloc_itself_or_turns_them_off_is_left_alone(env):
    assert probe(**env) == "False False"


HANDED_BACK = """
import os, sys, threading, time
from turbolift._wire import allocator
if sys.argv[1] == "no-trimmer":
    allocator._start_trimmer = lambda libc: None   # what bound() did before the trimmer: settings only

def rss():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS"))

def burst(pins):   # as threads receiving 1 MiB results do, with smaller buffers kept in between
    payloads = []
    def receive():
        for _ in range(50):
            payloads.append(b"x" * (1 << 20))
            pins.append(b"y" * 100_000)
    threads = [threading.Thread(target=receive) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return payloads

def bursts(rounds):
    # Each burst held 200 MiB; once freed, how much of it is resident a few seconds later.
    base, pins, found = rss(), [], []
    for _ in range(rounds):
        payloads = burst(pins)
        held = rss() - base
        payloads.clear()
        kept = sum(len(pin) for pin in pins)
        deadline = time.monotonic() + 10   # (twenty looks of the trimmer: a busy machine delays them)
        while rss() - base - kept > 32 << 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        found.append(((held - kept) >> 20, (rss() - base - kept) >> 20))
        time.sleep(0.7)   # so that the next burst meets the trimmer at another point of its wait
    return found

assert allocator.bound()
if sys.argv[2] == "child":   # a forked child must get a trimmer of its own
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(writer, repr(bursts(3)).encode())
        os._exit(0)
    os.close(writer)
    found = eval(os.read(reader, 4096))
    os.waitpid(pid, 0)
else:
    found = bursts(4)
print(repr(found))
"""


@glibc_only
@pytest.mark.parametrize("variant", ["trimmer", "no-trimmer"])
@pytest.mark.parametrize("where", ["process", "child"])
def test_payload_memory_freed_in_bursts_goes_back_within_seconds(variant, where):
    """Four bursts of 200 MiB of 1 MiB buffers in 4 threads, smaller buffers kept in between (so
    that the freed memory is inside the arenas, not at their top): after each, within seconds, the
    freed memory is no longer resident (within 10 s); in a forked child too. The control (no
    trimmer, same settings) keeps it, so the check can fail."""
    found = eval(run_probe(HANDED_BACK, variant, where, timeout=180))
    assert all(held >= 150 for held, _ in found), f"a burst held too little to measure anything: {found}"
    if variant == "trimmer":
        assert all(left <= 32 for _, left in found), f"freed MiB still resident after bursts: {found}"
    else:
        assert any(left > 64 for _, left in found), f"the control no longer keeps memory: {found}"


OLD_GLIBC = """
import threading
from turbolift._wire import allocator

class WithoutMallinfo2:   # this glibc without mallinfo2, as before 2.33 (which cannot run here)
    def __init__(self, libc):
        self.libc, self.set = libc, []
    def __getattr__(self, name):
        if name == "mallinfo2":
            raise AttributeError(name)
        return getattr(self.libc, name)
    def mallopt(self, option, value):
        self.set.append((option, value))
        return self.libc.mallopt(option, value)

real = allocator._libc()
older = WithoutMallinfo2(real)
allocator._libc = lambda: older
print(allocator.bound(), older.set, [t.name for t in threading.enumerate() if t.name == "turbolift-trim"])
"""


@glibc_only
def test_without_mallinfo2_a_calling_program_holds_the_mmap_threshold_instead():
    assert run_probe(OLD_GLIBC) == "True [(-3, 131072)] []"
