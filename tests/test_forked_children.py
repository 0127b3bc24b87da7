"""A program that forks (``os.fork``, a fork ``multiprocessing`` pool) behaves as it does without turbolift.

gRPC does not survive fork, so a child forked from a caller, or from a worker
while a call runs, uses none of its parent's channels and streams: marked
functions run in the child, its exit ends nothing of the parent's (no call
in flight, no cluster), and a child a call forks ends as that call's child
would in a plain program.
"""
from __future__ import annotations

import re

from conftest import TIMEOUT, both, run_python, write_files

FORKING_FILES = {"work.py": """
    import multiprocessing, os
    import turbolift

    @turbolift.on()
    def double(x):
        print("doubling", x, flush=True)
        return 2 * x

    @turbolift.on()
    def double_in_a_forked_pool(values):
        with multiprocessing.get_context("fork").Pool(1) as pool:
            return pool.map(double, values)
"""}


def test_a_child_the_program_forks_runs_marked_functions_as_locally(tmp_path, cache_dir):
    """gRPC does not survive fork: in a child the program forks (a fork Pool, os.fork), marked functions
    run in the child and its exit stops nothing of the parent's (before: the child's call, and a child's
    normal exit, waited for ever; and every fork printed gRPC's "skipping fork() handlers" line)."""
    local, remote = both(tmp_path, cache_dir, """
        import multiprocessing, os, sys
        from work import double
        print(double(1))
        with multiprocessing.get_context("fork").Pool(1) as pool:   # (one: its prints in order)
            print(pool.map(double, [2, 3]))
        child = os.fork()
        if child == 0:
            print("child", double(4), flush=True)
            sys.exit(0)   # (its exit handlers run: they must not stop the parent's cluster)
        os.waitpid(child, 0)
        print("parent", double(5))
    """, files=FORKING_FILES, env={"TURBOLIFT_OUTPUT_PREFIX": "0"})
    assert remote.stdout == local.stdout, remote.stderr
    assert remote.stderr == local.stderr == ""


def test_a_child_a_call_forks_on_a_worker_runs_marked_functions_in_place(tmp_path, cache_dir):
    """The same on a worker: a call that maps a marked function over a fork Pool gets its results, and
    what the children print reaches the program's output (before: the child's print waited for ever)."""
    local, remote = both(tmp_path, cache_dir, """
        from work import double_in_a_forked_pool
        print(double_in_a_forked_pool([1, 2]))
    """, files=FORKING_FILES)
    assert remote.stdout == local.stdout == "doubling 1\ndoubling 2\n[2, 4]\n", remote.stderr


IN_FLIGHT_FILES = {"work.py": """
    import os, sys, time
    import turbolift

    @turbolift.on(retries=0)   # (no retry: a call the child's exit broke would raise, not start again)
    def slow(marker, seconds):
        open(marker, "w").close()
        time.sleep(seconds)
        return "slow done"

    @turbolift.on()
    def double(x):
        return 2 * x

    @turbolift.on()
    def fork_and_wait(how):
        child = os.fork()
        if child == 0:
            print("child", how, flush=True)
            if how == "raise":
                raise ValueError("from the child")
            sys.exit(how)
        _, status = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(status)
"""}


def test_a_childs_normal_exit_breaks_no_call_its_parent_has_in_flight(tmp_path, cache_dir):
    """A child forked while a call is in flight, which ends with ``sys.exit``, leaves that call alone
    (before: finalising its copies of the parent's gRPC objects at exit reset the parent's streams on
    the shared sockets, and the call failed with WorkerLost)."""
    local, remote = both(tmp_path, cache_dir, """
        import os, subprocess, sys, threading, time
        from work import double, slow
        marker = os.path.abspath("started")
        result = []
        thread = threading.Thread(target=lambda: result.append(slow(marker, 3)))
        thread.start()
        for _ in range(1200):   # (at most 120 s) until the call runs on its worker
            if os.path.exists(marker):
                break
            time.sleep(0.1)
        child = os.fork()
        if child == 0:
            print("child", double(4), flush=True)
            sys.exit(0)
        os.waitpid(child, 0)
        thread.join()
        # (gRPC's fork handlers are off through its environment, which neither this program nor what
        # it starts once gRPC is imported sees)
        probe = "import os; print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'))"
        seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
        print("parent", result, double(5), os.environ.get("GRPC_ENABLE_FORK_SUPPORT"), seen)
    """, files=IN_FLIGHT_FILES, env={"TURBOLIFT_OUTPUT_PREFIX": "0"})
    assert remote.stdout == local.stdout == "child 8\nparent ['slow done'] 10 None None\n", remote.stderr
    assert remote.stderr == local.stderr == ""


def test_a_child_a_call_forks_ends_as_it_would_in_a_plain_program(tmp_path, cache_dir):
    """A call's forked child that ends with ``sys.exit(code)``, or raises, exits with that code (or 1,
    with its traceback on stderr), and the call goes on (before: its SystemExit was taken for the
    call's outcome and the child answered on its parent's stream, and the call hung)."""
    local, remote = both(tmp_path, cache_dir, """
        from work import fork_and_wait
        print(fork_and_wait(3), fork_and_wait(0), fork_and_wait(None), fork_and_wait("raise"))
    """, files=IN_FLIGHT_FILES, env={"TURBOLIFT_OUTPUT_PREFIX": "0"})
    assert remote.stdout == local.stdout == "child 3\nchild 0\nchild None\nchild raise\n3 0 0 1\n", \
        remote.stderr
    # The child's traceback from the function on, as a plain program's child prints it (the program's
    # frames above it are not on the worker), and no word of gRPC's.
    lines = remote.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and len(lines) == 4, remote.stderr
    assert lines[1].endswith('work.py", line 20, in fork_and_wait') and local.stderr.endswith(
        "\n".join(lines[1:])[lines[1].index('work.py"'):] + "\n"), remote.stderr


def test_a_child_forked_while_the_caller_side_loads_can_use_an_executor(tmp_path, cache_dir):
    """A program that forks as it starts, while gRPC is imported in the background, gets a working
    ``turbolift.Executor`` in the child (before: the child waited for ever on the import's lock)."""
    local, remote = both(tmp_path, cache_dir, """
        import os, sys
        import turbolift
        child = os.fork()
        if child == 0:
            with turbolift.Executor() as pool:
                print("child", pool.submit(abs, -3).result(), flush=True)
            sys.exit(0)
        os.waitpid(child, 0)
        with turbolift.Executor() as pool:
            print("parent", pool.submit(abs, -4).result())
    """, env={"TURBOLIFT_OUTPUT_PREFIX": "0"})
    assert remote.stdout == local.stdout == "child 3\nparent 4\n", remote.stderr


def test_a_child_waiting_on_its_parents_call_is_told_why_instead_of_waiting_for_ever(tmp_path, cache_dir):
    """A future, or a ``map``, the parent had in flight at the fork fails in the child with an error that
    says only the parent gets its result; the parent gets it (before: the child waited for ever)."""
    script = """
        import os, sys, time
        import turbolift
        from work import slow
        marker = os.path.abspath("started")
        future = slow.submit(marker, 2)
        mapped = slow.map([marker + "-map"] * 2, [2, 2])
        for _ in range(1200):   # (at most 120 s) until the calls run on their workers
            if os.path.exists(marker) and os.path.exists(marker + "-map"):
                break
            time.sleep(0.1)
        child = os.fork()
        if child == 0:
            for wait in (future.result, lambda: next(mapped)):
                try:
                    wait()
                except turbolift.TurboliftError as exc:
                    print("child:", exc)
            sys.stdout.flush()
            os._exit(0)
        os.waitpid(child, 0)
        print("parent:", future.result(), list(mapped))
    """
    write_files(tmp_path, {"app.py": script, **IN_FLIGHT_FILES})
    remote = run_python(["-m", "turbolift", "--workers", "2", "app.py"], tmp_path, cache_dir, timeout=TIMEOUT,
                        TURBOLIFT_OUTPUT_PREFIX="0")
    assert remote.returncode == 0, remote.stderr
    told = re.fullmatch(r"(child: this call was started by process (\d+) before it forked: only that process "
                        r"gets its result; call the function again in this process\n){2}"
                        r"parent: slow done \['slow done', 'slow done'\]\n", remote.stdout)
    assert told, remote.stdout + remote.stderr
    assert remote.stderr == ""
