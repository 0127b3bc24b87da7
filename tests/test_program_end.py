"""The end of a program: what runs after its main module returned behaves as without turbolift.

Plain python, once the main module has returned, waits for the program's other (non-daemon)
threads, then runs its exit handlers, and only then ends. Each test runs one program with
``python`` and with ``python -m turbolift`` on real workers and compares what it printed.
"""
from __future__ import annotations

from conftest import TIMEOUT, both, run_python, write_files

WORK = """
    import time, turbolift

    @turbolift.on()
    def add(a, b):
        return a + b

    @turbolift.on()
    def slow(x):
        time.sleep(0.05)
        return x

    @turbolift.on()
    def sleep(seconds):
        time.sleep(seconds)

    @turbolift.on()
    def write_later(path, text):
        time.sleep(1)
        with open(path, "w") as out:
            out.write(text)
"""


def test_threads_and_exit_handlers_still_call_after_the_main_module_returned(tmp_path, cache_dir):
    """A thread that outlives the main module and an exit handler call, submit, map and await marked
    functions (before: the clusters stopped as the main module returned, and each of them failed with
    "ClusterError: this cluster has been shut down")."""
    local, remote = both(tmp_path, cache_dir, """
        import asyncio, atexit, concurrent.futures, threading, time
        from work import add

        def use(who):
            print(who, add(2, 3), add.submit(3, 4).result(), list(add.map([1, 2], [3, 4])),
                  asyncio.run(add.aio(4, 5)), flush=True)

        def later():
            time.sleep(0.5)
            use("thread")

        atexit.register(use, "exit handler")
        print("main", add(0, 1), flush=True)
        threading.Thread(target=later).start()
        # The program's own pool, shut down by concurrent.futures at the exit, before the thread ends.
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pool.submit(time.sleep, 0.2)
    """, files={"work.py": WORK})
    expected = "main 1\nthread 5 7 [4, 6] 9\nexit handler 5 7 [4, 6] 9\n"
    assert local.stdout == remote.stdout == expected, remote.stderr
    assert local.stderr == remote.stderr == "", remote.stderr


def test_the_first_call_may_come_after_the_main_module_returned(tmp_path, cache_dir):
    """A thread's first call connects to the workers after the main module returned (before: the
    health checks of that first connection ran on a pool that concurrent.futures had shut down)."""
    local, remote = both(tmp_path, cache_dir, """
        import threading, time
        from work import add

        def later():
            time.sleep(0.5)
            print("thread", add.submit(1, 1).result(), add(2, 2), flush=True)

        threading.Thread(target=later).start()
    """, files={"work.py": WORK})
    assert local.stdout == remote.stdout == "thread 2 4\n", remote.stderr
    assert local.stderr == remote.stderr == "", remote.stderr


def test_submitted_calls_end_before_the_program_and_unread_maps_do_not_hold_it(tmp_path, cache_dir):
    """A call submitted and never waited for still has its effect, as when ``submit`` ran it in place
    (before: it was cancelled at the end); a map never read to its end, even over an endless
    iterator, does not hold the exit up (without turbolift its items are only computed as read)."""
    script = """
        import itertools, os
        from work import slow, write_later

        if os.path.exists("written.txt"):
            os.remove("written.txt")
        endless, long = slow.map(itertools.count()), slow.map(range(10_000))
        print(next(endless), next(long), flush=True)
        write_later.submit("written.txt", "done")
    """
    # (An exit held by the maps would end in the runs' timeout: their 10,000 items of 50 ms on 2
    # workers take over 4 minutes, and the endless one never ends.)
    local, remote = both(tmp_path, cache_dir, script, files={"work.py": WORK})
    assert local.stdout == remote.stdout == "0 0\n", remote.stderr
    assert local.stderr == remote.stderr == "", remote.stderr
    assert (tmp_path / "written.txt").read_text() == "done"   # (the second run's: it removes the file)


def test_calls_submitted_by_a_done_callback_at_the_end_end_too(tmp_path, cache_dir):
    """Each call's done-callback submits the next: the whole chain runs before the program ends, as it
    does when ``submit`` runs each call in place (before this was waited for: only the first, the
    clusters stopped while its callback was still submitting the second)."""
    local, remote = both(tmp_path, cache_dir, """
        import os
        from work import add

        if os.path.exists("chain.txt"):
            os.remove("chain.txt")

        def more(done):
            with open("chain.txt", "a") as out:
                out.write(f"{done.result()} ")
            if done.result() < 4:
                add.submit(done.result(), 1).add_done_callback(more)

        add.submit(0, 1).add_done_callback(more)
    """, files={"work.py": WORK})
    assert local.stderr == remote.stderr == "", remote.stderr
    assert (tmp_path / "chain.txt").read_text() == "1 2 3 4 "   # (the second run's: it removes the file)


def test_a_map_read_by_an_exit_handler_still_has_its_items(tmp_path, cache_dir):
    """An exit handler reads a map the main module made (before: ``weakref.finalize``'s own exit hook,
    which runs before the program's handlers, had cancelled its batches, and the list was empty)."""
    local, remote = both(tmp_path, cache_dir, """
        import atexit
        from work import add

        squares = None
        atexit.register(lambda: print(list(squares), flush=True))
        squares = add.map(range(5), range(5))
    """, files={"work.py": WORK})
    assert local.stdout == remote.stdout == "[0, 2, 4, 6, 8]\n", remote.stderr
    assert local.stderr == remote.stderr == "", remote.stderr


def test_daemon_threads_calling_do_not_hold_the_end(tmp_path, cache_dir):
    """Plain python stops daemon threads where they are: one waiting on an hour-long call and one
    submitting without end do not hold the exit (before: the end waited for every call they had
    submitted, the first one for an hour)."""
    local, remote = both(tmp_path, cache_dir, """
        import threading, time
        from work import add, sleep

        def submit_for_ever():
            while True:
                add.submit(1, 1)

        threading.Thread(target=lambda: sleep.submit(3600).result(), daemon=True).start()
        threading.Thread(target=submit_for_ever, daemon=True).start()
        time.sleep(1)
        print("main done", flush=True)
    """, files={"work.py": WORK})   # (an exit held for the hour ends in the run's timeout)
    assert local.stdout == remote.stdout == "main done\n", remote.stderr
    assert local.stderr == remote.stderr == "", remote.stderr


def test_an_executor_of_a_plain_python_program_ends_its_calls_at_the_exit(tmp_path, cache_dir):
    """As a ``concurrent.futures`` executor never shut down: what was submitted to a
    ``turbolift.Executor`` in plain python ends before the program does (before: its cluster stopped
    at the exit, the call with it, and the file was never written)."""
    write_files(tmp_path, {"work.py": WORK, "app.py": """
        import turbolift
        from work import write_later

        turbolift.Executor("local:2").submit(write_later, "written.txt", "done")
    """})
    out = run_python(["app.py"], tmp_path, cache_dir, timeout=TIMEOUT)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert (tmp_path / "written.txt").read_text() == "done"


def test_an_interrupted_program_shows_its_own_frames_and_does_not_wait_for_its_calls(tmp_path, cache_dir):
    """KeyboardInterrupt out of the main module: the traceback shows the program's frames only and the
    status is plain python's; a submitted call still running is not waited for (before: the frames of
    runpy and turbolift came first)."""
    write_files(tmp_path, {"work.py": """
        import time, turbolift

        @turbolift.on()
        def sleep(seconds):
            time.sleep(seconds)
    """, "app.py": """
        import time
        from work import sleep

        sleep.submit(300)
        time.sleep(0.5)
        raise KeyboardInterrupt
    """})
    remote = run_python(["-m", "turbolift", "--workers", "1", "app.py"], tmp_path, cache_dir, timeout=TIMEOUT)
    assert remote.returncode == -2, remote.stderr   # (killed by SIGINT, as plain python ends then)
    assert remote.stderr.splitlines() == [
        "Traceback (most recent call last):",
        f'  File "{tmp_path / "app.py"}", line 6, in <module>',
        "    raise KeyboardInterrupt",
        "KeyboardInterrupt"], remote.stderr
    # At once, while turbolift's caller side still imports in the background (before: status 1, as
    # CPython ends so when an import runs in a thread while it finalises after a KeyboardInterrupt).
    write_files(tmp_path, {"at_once.py": "raise KeyboardInterrupt\n"})
    at_once = run_python(["-m", "turbolift", "--workers", "2", "at_once.py"], tmp_path, cache_dir,
                         timeout=TIMEOUT)
    assert at_once.returncode == -2, at_once.stderr


def test_ctrl_c_during_a_remote_call_shows_the_call_not_turbolifts_wait(tmp_path, cache_dir):
    """A Ctrl-C while the main thread waits for a remote call: the traceback ends at the marked
    function's call, as the program's own frames do locally (the function's ran on the worker), not
    in a dozen frames of turbolift's caller side, gRPC and threading."""
    write_files(tmp_path, {"work.py": WORK, "app.py": """
        import os, signal, threading
        from work import sleep

        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        sleep(300)
    """})
    remote = run_python(["-m", "turbolift", "--workers", "1", "app.py"], tmp_path, cache_dir, timeout=TIMEOUT)
    assert remote.returncode == -2, remote.stderr
    lines = remote.stderr.splitlines()
    assert lines[:3] == ["Traceback (most recent call last):",
                         f'  File "{tmp_path / "app.py"}", line 5, in <module>',
                         "    sleep(300)"], remote.stderr
    assert lines[-1] == "KeyboardInterrupt", remote.stderr
    assert not [line for line in lines if "_caller" in line or "grpc" in line or "threading.py" in line], \
        remote.stderr
    # Caught, and its traceback printed by the program: the same (before: only the uncaught one was cut).
    write_files(tmp_path, {"caught.py": """
        import os, signal, threading, traceback
        from work import sleep

        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            sleep(300)
        except KeyboardInterrupt:
            traceback.print_exc()
    """})
    caught = run_python(["-m", "turbolift", "--workers", "1", "caught.py"], tmp_path, cache_dir,
                        timeout=TIMEOUT)
    assert caught.returncode == 0, caught.stderr
    lines = caught.stderr.splitlines()
    assert lines[1:3] == [f'  File "{tmp_path / "caught.py"}", line 6, in <module>',
                          "    sleep(300)"], caught.stderr
    assert not [line for line in lines if "_caller" in line or "grpc" in line or "threading.py" in line], \
        caught.stderr


def test_ctrl_c_during_a_local_submit_stops_the_program(tmp_path, cache_dir):
    """In plain python ``submit`` runs the call at once; a Ctrl-C meanwhile stops the program, as it does
    when an executor's thread runs the call (before: it was stored in the future, and the program went
    on). An exception of the function is still stored."""
    write_files(tmp_path, {"app.py": """
        import os, signal, time, turbolift

        @turbolift.on()
        def interrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)

        @turbolift.on()
        def failing():
            raise SystemExit(3)

        print(type(failing.submit().exception()).__name__, flush=True)
        interrupted.submit()
        print("went on")
    """})
    local = run_python(["app.py"], tmp_path, cache_dir, timeout=TIMEOUT)
    assert local.returncode == -2, local.stderr
    assert local.stdout == "SystemExit\n", local.stdout
    assert local.stderr.splitlines()[-1] == "KeyboardInterrupt", local.stderr
