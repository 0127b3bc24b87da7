"""Workers die, calls time out or are cancelled: nothing hangs, nothing is lost."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from turbolift import WorkerLost, Workers, _runtime, on
from turbolift._enabling import switch


def nap_then_pid(seconds, pid_file):
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def pid():
    return os.getpid()


def exit_hard(code):
    os._exit(code)


def segfault():
    import ctypes

    ctypes.string_at(0)


def count_forever(progress_file, seconds):
    """Append a line every 10 ms for `seconds`: a worker that was told to stop stops writing."""
    deadline = time.monotonic() + seconds
    with open(progress_file, "a") as handle:
        while time.monotonic() < deadline:
            handle.write(".")
            handle.flush()
            time.sleep(0.01)
    return "finished"


def _wait_for(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def _stops_growing(path: Path) -> bool:
    time.sleep(0.3)  # a cancelled call may still be inside one sleep
    before = path.stat().st_size
    time.sleep(0.5)
    return path.stat().st_size == before


def test_a_call_whose_worker_is_killed_is_retried_on_another(cluster, tmp_path):
    pid_file = tmp_path / "pid"
    future = on(cluster)(nap_then_pid).submit(1.5, str(pid_file))
    victim = int(_wait_for(pid_file))
    os.kill(victim, signal.SIGKILL)
    survivor = future.result(timeout=60)
    assert survivor != victim and survivor in cluster.pids()


def test_with_no_retry_left_the_caller_gets_worker_lost_naming_the_worker(cluster, tmp_path):
    pid_file = tmp_path / "pid"
    f = on(cluster, retries=0)(nap_then_pid)
    future = f.submit(1.5, str(pid_file))
    victim = int(_wait_for(pid_file))
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerLost, match=r"died \(killed by SIGKILL\)") as info:
        future.result(timeout=60)
    assert info.value.worker and info.value.worker in str(info.value)  # the lost worker's address

    # The synchronous path too: kill the worker from another thread mid-call.
    pid_file.unlink()
    killer = threading.Thread(target=lambda: os.kill(int(_wait_for(pid_file)), signal.SIGKILL))
    killer.start()
    with pytest.raises(WorkerLost, match="killed by SIGKILL"):
        f(1.5, str(pid_file))
    killer.join()


@pytest.mark.parametrize("crash, reason", [(lambda f: f(exit_hard)(3), "exit code 3"),
                                           (lambda f: f(segfault)(), "killed by SIGSEGV")])
def test_a_function_that_kills_its_process_is_a_clear_error_and_work_goes_on(cluster, crash, reason):
    before = set(cluster.pids())
    with pytest.raises(WorkerLost, match=reason) as info:
        crash(on(cluster))
    assert "the function itself ends its process" in str(info.value)
    # LocalQueue replaced the dead workers; the program goes on.
    results = [on(cluster)(pid).submit() for _ in range(20)]
    served = {r.result(timeout=60) for r in results}
    assert served <= set(cluster.pids())
    assert set(cluster.pids()) != before
    assert len(cluster.pids()) == 2


def test_a_hand_started_worker_keeps_serving_after_user_code_kills_its_process(start_worker):
    worker = start_worker()
    switch.enable(Workers(worker.address))
    try:
        with pytest.raises(WorkerLost, match="was lost|died"):
            on(retries=0)(segfault)()
        deadline = time.monotonic() + 30
        while True:  # the supervisor restarts the server on the same address
            try:
                served_by = on(retries=0)(pid)()
                break
            except WorkerLost:
                assert time.monotonic() < deadline, "the worker never came back"
                time.sleep(0.1)
        assert served_by != worker.process.pid
    finally:
        _runtime.disable()


def test_an_expired_deadline_raises_timeout_error_and_stops_the_work(cluster, tmp_path):
    progress = tmp_path / "progress"
    f = on(cluster)(count_forever)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        f.options(timeout=1.0)(str(progress), 30)
    assert time.monotonic() - started < 10
    assert _stops_growing(progress), "the worker kept running a call nobody waits for"
    assert f.options(timeout=5)(str(tmp_path / "short"), 0.05) == "finished"


def test_cancelling_a_future_cancels_the_call_on_the_worker(cluster, tmp_path):
    progress = tmp_path / "progress"
    future = on(cluster)(count_forever).submit(str(progress), 30)
    _wait_for(progress)
    assert future.cancel()
    assert future.cancelled()
    assert _stops_growing(progress), "the cancelled call kept running on the worker"


def test_a_killed_local_worker_is_restarted_and_the_program_goes_on(cluster):
    f = on(cluster)(pid)
    assert f() in cluster.pids()
    first = cluster.pids()
    for victim in first:
        os.kill(victim, signal.SIGKILL)
    results = {f.submit().result(timeout=60) for _ in range(10)}
    assert results and not results & set(first)
    assert len(cluster.pids()) == 2


def test_health_and_describe_answer_while_every_call_slot_is_busy(start_worker):
    """Probes must not queue behind long calls (Kubernetes would restart a busy pod)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from turbolift.v1 import worker_pb2 as pb
    from turbolift.v1 import worker_pb2_grpc as pb_grpc

    worker = start_worker(extra_args=("--threads", "2"))
    switch.enable(Workers(worker.address))
    try:
        f = on()(nap_then_pid)
        busy = [f.submit(2.0, os.devnull) for _ in range(6)]  # 2 run, 4 wait for a slot
        running = []
        with grpc.insecure_channel(worker.address) as channel:
            # Wait (bounded) until both slots are taken: on a busy machine the calls take a while to arrive.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (not running or running[-1] < 2):
                described = pb_grpc.WorkerStub(channel).Describe(pb.DescribeRequest(), timeout=5.0,
                                                                  metadata=worker.metadata)
                running.append(described.calls_running)
                time.sleep(0.05)
            started = time.monotonic()
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            answered_in = time.monotonic() - started
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert answered_in < 1.0
        assert running[-1] == 2 and max(running) == 2  # no more than --threads run user code at once
        assert len({fut.result(timeout=60) for fut in busy}) == 1
    finally:
        _runtime.disable()
