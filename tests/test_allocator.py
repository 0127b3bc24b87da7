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
