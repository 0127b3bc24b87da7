"""Local workers forked by one template process: real processes, real sockets, real signals.

The template imports the workers' modules once and forks each worker; a
forked worker must behave as one started as a fresh interpreter (its
arguments, its directory, its own call ids and token), be replaced when it
dies, and leave nothing behind. When the template itself is killed, the
cluster goes on with fresh interpreters.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from conftest import distributed_on, parent_of, wait_gone

from turbolift import LocalQueue, _runtime, on
from turbolift._caller import calls

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"),
                                reason="the template needs Linux (fork, SCM_RIGHTS, pidfds)")


def identity():
    import multiprocessing

    return {"pid": os.getpid(), "argv": sys.argv[1:], "cwd": os.getcwd(), "call_id": calls.new_call_id(),
            "main": sys.modules["__main__"].__spec__.name if sys.modules["__main__"].__spec__ else None,
            "session": os.getsid(0), "group": os.getpgrp(),
            "authkey": bytes(multiprocessing.current_process().authkey).hex()}


def pid():
    return os.getpid()


def command_line(pid: int) -> list:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().decode().split("\0")


def _spread(function, cluster, count: int, timeout: float = 60.0) -> dict:
    """Results of ``function`` from every worker of ``cluster`` (calls in flight at once, bounded)."""
    on(cluster)(function)()   # the cluster starts with its first call
    workers = len(cluster.local_pids())
    seen: dict = {}
    deadline = time.monotonic() + timeout
    while len(seen) < workers and time.monotonic() < deadline:
        for result in [on(cluster)(function).submit() for _ in range(count)]:
            value = result.result(timeout=60)
            seen[value["pid"] if isinstance(value, dict) else value] = value
    return seen


def test_every_local_worker_is_forked_by_one_template_and_looks_freshly_started(tmp_path):
    with distributed_on(3, tmp_path / "cache") as cluster:
        seen = _spread(identity, cluster, 24)
        pids = cluster.local_pids()
        assert sorted(seen) == sorted(pids)
        templates = {parent_of(worker) for worker in pids}
        assert len(templates) == 1
        template = templates.pop()
        assert template != os.getpid() and parent_of(template) == os.getpid()
        assert "--template-fd" in command_line(template)
        for worker in seen.values():
            # As a worker started on its own: its options, the program's working directory, `python -m`.
            assert worker["argv"][0] == "worker" and "--listen" in worker["argv"]
            assert "--template-fd" not in worker["argv"]
            assert worker["cwd"] == os.getcwd()
            assert worker["main"] == "turbolift.__main__"
            assert worker["call_id"].startswith(f"{worker['pid']}-")   # not the template's pid
            assert worker["session"] == worker["group"] == worker["pid"]   # a session of its own
        assert len({worker["authkey"] for worker in seen.values()}) == len(seen)   # a key of its own
    assert wait_gone(pids + [template]) == []


def test_forked_tcp_workers_get_the_run_token_and_refuse_calls_without_it(tmp_path):
    cluster = LocalQueue(workers=2, cache_dir=str(tmp_path / "cache"), transport="tcp")
    from turbolift._enabling import switch

    switch.enable(cluster)
    try:
        assert on(cluster)(pid)() in cluster.local_pids()
        assert all(parent_of(worker) != os.getpid() for worker in cluster.local_pids())
        import grpc

        from turbolift.v1 import worker_pb2 as pb
        from turbolift.v1 import worker_pb2_grpc as pb_grpc

        for address in cluster.wait_ready(30):
            with grpc.insecure_channel(address) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    pb_grpc.WorkerStub(channel).Describe(pb.DescribeRequest(), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        _runtime.disable()


def test_a_killed_forked_worker_is_reported_killed_and_replaced_by_a_fork(tmp_path):
    with distributed_on(2, tmp_path / "cache") as cluster:
        on(cluster)(pid)()
        victim = cluster.local_pids()[0]
        template = parent_of(victim)
        address = cluster.wait_ready(30)[0]
        os.kill(victim, signal.SIGKILL)
        assert cluster.exit_reason(address, timeout=30) == "killed by SIGKILL"
        served = set(_spread(pid, cluster, 16))
        assert victim not in served and served == set(cluster.local_pids())
        assert all(parent_of(worker) == template for worker in cluster.local_pids())


def test_with_its_template_killed_the_cluster_goes_on_with_fresh_interpreters(tmp_path):
    with distributed_on(2, tmp_path / "cache") as cluster:
        on(cluster)(pid)()
        forked = cluster.local_pids()
        template = parent_of(forked[0])
        os.kill(template, signal.SIGKILL)
        # Its workers see their parent change and leave; calls go on, on fresh interpreters.
        assert wait_gone(forked, timeout=30) == []
        served = set(_spread(pid, cluster, 16))
        assert served == set(cluster.local_pids()) and not served & set(forked)
        assert all(parent_of(worker) == os.getpid() for worker in served)


def test_a_cluster_stopped_while_its_template_imports_stops_at_once_and_leaves_nothing(tmp_path):
    cluster = LocalQueue(workers=4, cache_dir=str(tmp_path / "cache"))
    cluster.start()
    template = cluster._template
    assert template is not None and template.starting
    run_dir = os.path.realpath(cluster._run_dir)
    started = time.monotonic()
    cluster.stop()
    # Bounded well below the grace a worker gets (2 s each): nothing was waited out.
    assert time.monotonic() - started < 1.9
    assert wait_gone([template.process.pid]) == []
    # Nothing forked late lives on: every process of the run has the run directory as its cwd.
    deadline = time.monotonic() + 15
    while _processes_in(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_in(run_dir) == []


def _processes_in(directory: str) -> list:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd in (directory, directory + " (deleted)"):
                found.append(int(entry))
    return found


def test_a_template_killed_before_it_forked_leaves_the_cluster_to_fresh_interpreters(tmp_path):
    with distributed_on(2, tmp_path / "cache") as cluster:
        cluster.start()
        template = cluster._template
        assert template is not None and template.starting
        os.kill(template.process.pid, signal.SIGKILL)
        served = set(_spread(pid, cluster, 8))
        assert served == set(cluster.local_pids()) and len(served) == 2
        assert all(parent_of(worker) == os.getpid() for worker in served)


def test_a_stopped_template_is_not_waited_for(tmp_path):
    """SIGSTOP: it answers nothing; a dead worker's replacement starts afresh, and stopping the cluster
    waits at most about a second for the ends it does not report (not a second per worker)."""
    cluster = LocalQueue(workers=4, cache_dir=str(tmp_path / "cache"))
    from turbolift._enabling import switch

    switch.enable(cluster)
    try:
        on(cluster)(pid)()
        template = cluster._template
        os.kill(template.process.pid, signal.SIGSTOP)
        victim = cluster.local_pids()[0]
        os.kill(victim, signal.SIGKILL)
        served = set(_spread(pid, cluster, 16, timeout=120))
        assert victim not in served and len(served) == 4
        started = time.monotonic()
        _runtime.disable()
        took = time.monotonic() - started
        assert took < 8, took   # (4 workers x 2 s of grace each, were they waited out)
    finally:
        if template.process.poll() is None:   # (the cluster's stop kills it: a stopped process takes SIGKILL)
            os.kill(template.process.pid, signal.SIGCONT)
        _runtime.disable()


def environment(name):
    return os.environ.get(name)


def pid_and_environment(name):
    return os.getpid(), os.environ.get(name)


def test_a_forked_replacement_sees_the_programs_environment_of_now(tmp_path, monkeypatch):
    monkeypatch.setenv("TURBOLIFT_TEST_GONE_LATER", "at start")
    with distributed_on(2, tmp_path / "cache") as cluster:
        assert on(cluster)(environment)("TURBOLIFT_TEST_GONE_LATER") == "at start"
        monkeypatch.setenv("TURBOLIFT_TEST_SET_LATER", "set after start")
        monkeypatch.delenv("TURBOLIFT_TEST_GONE_LATER")
        for victim in cluster.local_pids():
            os.kill(victim, signal.SIGKILL)
        assert wait_gone(cluster.local_pids(), timeout=30) == []
        seen = {on(cluster)(environment).submit(name).result(timeout=60)
                for name in ["TURBOLIFT_TEST_SET_LATER"] * 8}
        assert seen == {"set after start"}
        assert on(cluster)(environment)("TURBOLIFT_TEST_GONE_LATER") is None
        assert all(parent_of(worker) != os.getpid() for worker in cluster.local_pids())   # forked


def test_an_environment_too_large_to_send_starts_the_replacement_afresh_and_harms_nothing(tmp_path,
                                                                                            monkeypatch):
    with distributed_on(2, tmp_path / "cache") as cluster:
        on(cluster)(pid)()
        first, second = cluster.local_pids()
        template = parent_of(first)
        monkeypatch.setenv("TURBOLIFT_TEST_LARGE", "x" * 100_000)   # over what a request may carry
        os.kill(first, signal.SIGKILL)
        served = set(_spread(pid, cluster, 8))
        assert second in served and first not in served   # the other worker, and the template, live on
        fresh = (served - {second}).pop()
        assert parent_of(fresh) == os.getpid() and parent_of(second) == template
        # Each has the environment of the moment it was started: the fresh one has the variable.
        seen = {}
        for _ in range(40):
            if len(seen) == 2:
                break
            for found in [on(cluster)(pid_and_environment).submit("TURBOLIFT_TEST_LARGE") for _ in range(8)]:
                worker, value = found.result(timeout=60)
                seen[worker] = value
        assert seen == {fresh: "x" * 100_000, second: None}


PROGRAM_THAT_FORKS = """
import os, sys, time
from turbolift import on, _runtime
import helpers

helpers.pid()   # the cluster is up
workers = _runtime.worker_pids()
templates = {helpers.parent_of(worker) for worker in workers} - {os.getpid()}
print(" ".join(map(str, workers + sorted(templates))), flush=True)
if os.fork() == 0:   # a child that outlives the program (a daemon, say)
    time.sleep(12)
    os._exit(0)
"""

HELPERS = """
import os
from turbolift import on

@on()
def pid():
    return os.getpid()

def parent_of(pid):
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("PPid:"))
"""


def test_no_worker_or_template_outlives_a_program_whose_forked_child_does(tmp_path):
    import subprocess

    from conftest import child_env, write_files

    write_files(tmp_path, {"forks.py": PROGRAM_THAT_FORKS, "helpers.py": HELPERS})
    done = subprocess.run([sys.executable, "-m", "turbolift", "--workers", "2", "forks.py"], cwd=tmp_path,
                          env=child_env(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    left = [int(p) for p in done.stdout.split()]
    assert len(left) == 3, done.stdout   # two workers and their template
    assert wait_gone(left, timeout=8) == []   # (the forked child lives on for 12 s)
