"""turbolift's own thread pool (turbolift._caller.daemon_pool): it serves while the interpreter exits,
and a thread that cannot start (Python 3.12 refuses them then) never strands a task."""
from __future__ import annotations

import threading

import pytest

from turbolift._caller.daemon_pool import DaemonPool, in_daemon_thread_of_the_program


def test_tasks_run_on_daemon_threads_of_turbolift_up_to_the_limit():
    pool = DaemonPool(3, "test-pool")
    started = threading.Barrier(4, timeout=30)
    futures = [pool.submit(started.wait) for _ in range(3)]   # three at once: three threads
    started.wait()
    assert len({future.result(timeout=30) for future in futures}) == 3   # (each its own place at the barrier)
    names = pool.submit(lambda: (threading.current_thread().name, threading.current_thread().daemon,
                                 in_daemon_thread_of_the_program())).result(timeout=30)
    assert names[0].startswith("test-pool_") and names[1:] == (True, False)
    assert sum(t.name.startswith("test-pool_") for t in threading.enumerate()) == 3
    pool.close()


def test_a_thread_that_cannot_start_refuses_the_task_only_when_no_thread_could_run_it(monkeypatch):
    """Before: the pool counted the thread that failed to start, queued the task, and once its limit
    of such failures was reached no later task ever ran."""
    real_start = threading.Thread.start
    failures = [2]

    def start(thread):
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("can't create new thread at interpreter shutdown")
        return real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    pool = DaemonPool(2, "test-start")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="can't create new thread"):
            pool.submit(lambda: 0)
    assert pool.submit(lambda: 3).result(timeout=30) == 3
    assert pool.submit(lambda: 4).result(timeout=30) == 4
    pool.close()


def test_close_cancels_what_never_started_and_returns_its_arguments():
    pool = DaemonPool(1, "test-close")
    release, began = threading.Event(), threading.Event()
    running = pool.submit(lambda: began.set() or release.wait(30))
    assert began.wait(30)
    queued = pool.submit(lambda label: label, "never run")
    assert pool.close() == [("never run",)]
    assert queued.cancelled()
    release.set()
    assert running.result(timeout=30) is True
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(lambda: 0)
