"""Workers readied for a marked module once the program has imported it (``turbolift._caller.preload``).

Real programs under ``python -m turbolift`` with real local workers. The
project's module notes, when it is imported in a process other than the
program's, that process's pid in ``imports.log``: so the tests see which
workers imported it, and whether before the program's first call.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from conftest import child_env, make_installed_library, run_python, write_files

# The program writes its pid first, so that the module can tell the program from a worker.
PROJECT = {
    "proj/__init__.py": "",
    "proj/reason.py": """
        import sys
        print("proj.reason: PRELOAD_FAIL_ON_WORKERS is set on this worker", file=sys.stderr)
    """,
    "proj/heavy.py": """
        import os, pathlib, time
        import turbolift

        IMPORTED_AT = time.monotonic()
        here = pathlib.Path(__file__).resolve().parent
        program = int(pathlib.Path(os.environ["PRELOAD_DIR"], "program.pid").read_text())
        if os.getpid() != program:
            with open(pathlib.Path(os.environ["PRELOAD_DIR"], "imports.log"), "a") as log:
                log.write(f"{os.getpid()}\\n")
            if os.environ.get("PRELOAD_FAIL_ON_WORKERS"):
                import proj.reason   # says why, and is imported: only the first try prints it
                raise RuntimeError("this module cannot be imported on a worker")
            time.sleep(float(os.environ.get("PRELOAD_SLOW_IMPORT", "0")))

        @turbolift.on()
        def imported():
            return os.getpid(), IMPORTED_AT

        @turbolift.on()
        def add(a, b):
            return a + b
    """,
    "run.py": """
        import json, os, pathlib, sys, time
        directory = pathlib.Path(os.environ["PRELOAD_DIR"])
        (directory / "program.pid").write_text(str(os.getpid()))
        from proj.heavy import add, imported
        log = directory / "imports.log"
        if sys.argv[1] == "wait-for-workers":   # until both workers imported it, for at most argv[2] s
            limit = time.monotonic() + float(sys.argv[2])
            while time.monotonic() < limit and (not log.exists() or len(log.read_text().split()) < 2):
                time.sleep(0.05)
        elif sys.argv[1] == "exit":   # once a worker is importing it (bounded)
            limit = time.monotonic() + 60
            while time.monotonic() < limit and not log.exists():
                time.sleep(0.05)
            print(json.dumps({"exited": True, "worker_importing": log.exists()}))
            raise SystemExit(0)
        before_call = log.read_text().split() if log.exists() else []
        started = time.monotonic()
        pid, imported_at = imported()
        print(json.dumps({"sum": add(1, 2), "pid": pid, "imported_before_call": imported_at < started,
                          "workers_before_call": before_call}))
    """,
}


def _bundle_cache(tmp_path) -> str:
    return str(tmp_path / "bundle-cache")


def _warmed(tmp_path, cache_dir, files: dict, program: list,
            launcher: tuple = ("-m", "turbolift", "--workers", "1"), **env: str) -> None:
    """Write ``files`` and run ``program`` once without preloading, as an earlier run of the project would:
    a preload never parses a source (see ``bundling.WouldParse``), it takes the scans the bundle cache
    keeps, and the cache trusts a file unread once it is two seconds old. ``launcher``: what comes
    before ``program`` on ``python``'s command line (nothing, for a program run without turbolift)."""
    write_files(tmp_path, files)
    time.sleep(2.5)
    out = run_python([*launcher, *program], tmp_path, cache_dir / "warm-up",
                     timeout=120, TURBOLIFT_PRELOAD="0", TURBOLIFT_BUNDLE_CACHE=_bundle_cache(tmp_path),
                     **env)
    assert out.returncode == 0, out.stderr


def _warmed_project(tmp_path, cache_dir) -> None:
    warm_up = tmp_path / "warm-up"
    warm_up.mkdir()
    _warmed(tmp_path, cache_dir, PROJECT, ["run.py", "call-now"], PRELOAD_DIR=str(warm_up))


def _run(tmp_path, cache_dir, *mode: str, timeout: float = 120, **env: str):
    env.setdefault("PRELOAD_DIR", str(tmp_path))
    env.setdefault("TURBOLIFT_BUNDLE_CACHE", _bundle_cache(tmp_path))
    return run_python(["-m", "turbolift", "-v", "--workers", "2", "run.py", *mode], tmp_path, cache_dir,
                      timeout=timeout, **env)


def test_a_first_run_is_not_preloaded(tmp_path, cache_dir):
    """The bundle cache holds no scan of the project's files yet: the preload leaves them to the call."""
    write_files(tmp_path, PROJECT)
    out = _run(tmp_path, cache_dir, "wait-for-workers", "3")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sum"] == 3 and report["workers_before_call"] == [], report
    assert "not preloading proj.heavy: its files were not scanned before" in out.stderr


def test_workers_import_a_marked_module_before_the_first_call(tmp_path, cache_dir):
    _warmed_project(tmp_path, cache_dir)
    out = _run(tmp_path, cache_dir, "wait-for-workers", "60")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sum"] == 3
    assert len(report["workers_before_call"]) == 2, report   # both workers, before any call
    assert str(report["pid"]) in report["workers_before_call"]
    assert report["imported_before_call"] is True
    assert "uploaded bundle" not in out.stderr   # the calls found the bundle there
    # Each worker imported it once: the calls used what the preload imported.
    assert sorted((tmp_path / "imports.log").read_text().split()) == sorted(report["workers_before_call"])


@pytest.mark.parametrize("switched_off_by", ["environment", "pyproject.toml"])
def test_with_preload_off_workers_import_at_the_first_call(tmp_path, cache_dir, switched_off_by):
    env = {}
    if switched_off_by == "environment":
        env["TURBOLIFT_PRELOAD"] = "0"
    else:
        write_files(tmp_path, {"pyproject.toml": "[tool.turbolift]\npreload = false\n"})
    _warmed_project(tmp_path, cache_dir)
    out = _run(tmp_path, cache_dir, "wait-for-workers", "3", **env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sum"] == 3
    assert report["workers_before_call"] == []
    assert report["imported_before_call"] is False
    assert "uploaded bundle" in out.stderr


def test_a_call_made_while_its_worker_is_readied_waits_instead_of_uploading_again(tmp_path, cache_dir):
    _warmed_project(tmp_path, cache_dir)
    out = _run(tmp_path, cache_dir, "call-now", PRELOAD_SLOW_IMPORT="1.5")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sum"] == 3
    assert "readied worker" in out.stderr
    lines = (tmp_path / "imports.log").read_text().split()
    assert len(lines) == len(set(lines)), lines   # no worker imported it twice
    # The first call went to the first worker readied, and waited for it: the bundle was not
    # uploaded to that worker a second time (the other worker may get its own upload from the
    # second call, which can come before the preload reaches it).
    readied = [line.split()[3] for line in out.stderr.splitlines() if "readied worker" in line]
    uploaded = [line.split(" to worker ")[1].split()[0] for line in out.stderr.splitlines()
                if "uploaded bundle" in line]
    assert readied and readied[0] not in uploaded, out.stderr


def test_an_import_that_fails_on_the_workers_is_reported_by_the_call_as_without_preload(tmp_path, cache_dir):
    """The call's error, and what the failed import printed (here by a sub-import, which succeeded and so
    printed only at the first try: the preload's, when it preloads), shown once, as the call's."""
    outcomes, reasons = {}, {}
    for preload, mode in (("1", ["wait-for-workers", "60"]), ("0", ["call-now"])):
        directory = tmp_path / f"preload-{preload}"
        directory.mkdir()
        _warmed_project(directory, cache_dir / preload)
        out = _run(directory, cache_dir / preload, *mode, PRELOAD_FAIL_ON_WORKERS="1",
                   TURBOLIFT_PRELOAD=preload)
        assert out.returncode == 1, out.stdout
        outcomes[preload] = [line for line in out.stderr.splitlines()
                             if "cannot be imported on a worker" in line]
        reasons[preload] = [line for line in out.stderr.splitlines() if "PRELOAD_FAIL_ON_WORKERS is" in line]
    assert len((tmp_path / "preload-1" / "imports.log").read_text().split()) >= 2   # tried before the call
    assert outcomes["1"], outcomes
    assert [line.split(": ", 1)[-1] for line in outcomes["1"]] == \
        [line.split(": ", 1)[-1] for line in outcomes["0"]]
    for found in reasons.values():
        assert len(found) == 1 and re.match(r"\(imported local-\d\) proj\.reason: ", found[0]), reasons


def test_a_program_that_exits_does_not_wait_for_a_slow_preload(tmp_path, cache_dir):
    _warmed_project(tmp_path, cache_dir)
    started = time.monotonic()
    out = _run(tmp_path, cache_dir, "exit", PRELOAD_SLOW_IMPORT="120", timeout=100)
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"exited": True, "worker_importing": True}
    assert "Traceback" not in out.stderr, out.stderr
    assert elapsed < 60, elapsed   # the workers' import sleeps 120 s


def test_a_preload_never_starts_workers(tmp_path, cache_dir):
    """Under ``TURBOLIFT=1`` (here through ``sitecustomize``, as the README shows) workers start at the first
    call: importing a module with marked functions starts none. Once they run, a module imported later is
    preloaded."""
    files = {**PROJECT, "proj/later.py": """
        import turbolift

        @turbolift.on()
        def mul(a, b):
            return a * b
    """, "sitecustomize.py": """
        import os
        if os.environ.get("TURBOLIFT", "0") not in ("", "0"):
            import turbolift._site
            turbolift._site.activate_if_requested()
    """, "lazy.py": """
        import json, logging, os, pathlib, sys, time
        from turbolift import _runtime
        logging.basicConfig(level=logging.INFO)
        directory = pathlib.Path(os.environ["PRELOAD_DIR"])
        (directory / "program.pid").write_text(str(os.getpid()))
        from proj.heavy import add
        time.sleep(2)
        before_call = _runtime.worker_pids()
        total = add(1, 2)
        from proj.later import mul
        limit = time.monotonic() + (60 if sys.argv[1:] == ["wait"] else 0)
        while time.monotonic() < limit and "readied worker" not in (directory / "err.log").read_text():
            time.sleep(0.05)
        print(json.dumps({"workers_before_call": before_call, "sum": total, "product": mul(2, 3)}))
    """}
    warm_up = tmp_path / "warm-up"
    warm_up.mkdir()
    _warmed(tmp_path, cache_dir, files, ["lazy.py"], PRELOAD_DIR=str(warm_up))
    env = child_env(cache_dir, PRELOAD_DIR=str(tmp_path), TURBOLIFT="1", TURBOLIFT_WORKERS="2",
                    PYTHONPATH=str(tmp_path), TURBOLIFT_BUNDLE_CACHE=_bundle_cache(tmp_path))
    with open(tmp_path / "err.log", "w") as err:
        out = subprocess.run([sys.executable, "lazy.py", "wait"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=err, text=True, timeout=120)
    log = (tmp_path / "err.log").read_text()
    assert out.returncode == 0, log
    report = json.loads(out.stdout)
    assert report == {"workers_before_call": [], "sum": 3, "product": 6}, log
    assert "preloading proj.later" in log and "preloading proj.heavy" not in log, log


def test_a_package_that_calls_its_submodules_function_while_it_initialises(tmp_path, cache_dir):
    """The preload of ``pkg.sub`` looks up ``pkg.lazy`` while ``pkg`` is still being imported by the
    program, which meanwhile calls ``f``: neither may wait for the other (this hung)."""
    _warmed(tmp_path, cache_dir, {
        "pkg/__init__.py": """
            import time
            from .sub import f
            time.sleep(0.5)            # the package's own work after importing its submodule
            RESULT = f(2)              # a marked function called while the package is initialised
        """,
        "pkg/sub.py": """
            import turbolift

            @turbolift.on()
            def f(x):
                from . import lazy     # a sibling that the caller has not imported
                return lazy.g(x)
        """,
        "pkg/lazy.py": "def g(x):\n    return x * 2\n",
        "app.py": "import pkg\nprint('result', pkg.RESULT)\n",
    }, ["app.py"])
    out = run_python(["-m", "turbolift", "-v", "--workers", "2", "app.py"], tmp_path, cache_dir, timeout=120,
                     TURBOLIFT_BUNDLE_CACHE=_bundle_cache(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["result", "4"]
    assert "preloading pkg.sub" in out.stderr


def test_a_reloaded_module_runs_its_new_code_on_the_workers(tmp_path, cache_dir):
    """The module is preloaded, then edited and reloaded before its first call: the call runs the new
    code, as the local call does."""
    source = "import turbolift\n\n@turbolift.on()\ndef f():\n    return %r\n"
    _warmed(tmp_path, cache_dir, {"mod.py": source % "old", "app.py": """
        import importlib, pathlib, sys, time
        import mod
        if sys.argv[1:] == ["edit"]:
            time.sleep(1.0)        # the program's own work: the preload sends the old version meanwhile
            edited = pathlib.Path("mod.py").read_text().replace("old", "new version")
            pathlib.Path("mod.py").write_text(edited)
            importlib.reload(mod)
        print(mod.f.local(), "|", mod.f())
    """}, ["app.py"])
    out = run_python(["-m", "turbolift", "-v", "--workers", "1", "app.py", "edit"], tmp_path, cache_dir,
                     timeout=120, TURBOLIFT_BUNDLE_CACHE=_bundle_cache(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "readied worker" in out.stderr
    assert out.stdout.strip() == "new version | new version"


def test_a_call_ships_what_the_program_imported_after_the_preload(tmp_path, cache_dir):
    """The preload builds the bundle once ``mod`` is imported, before the program imports ``pkg2.sub``,
    which ``f`` imports lazily: the call still ships its own bundle, with ``pkg2.sub`` in it."""
    _warmed(tmp_path, cache_dir, {
        "pkg2/__init__.py": "NAME = 'pkg2'\n",
        "pkg2/sub.py": "VALUE = 'from pkg2.sub'\n",
        "mod.py": """
            import turbolift

            @turbolift.on()
            def f():
                from pkg2 import sub      # a lazy import of a module of a package not imported yet
                return sub.VALUE
        """,
        "app.py": """
            import time
            import mod
            time.sleep(1.0)            # the program's own work: the preload runs meanwhile
            import pkg2.sub
            print(mod.f.local(), "|", mod.f())
        """,
    }, ["app.py"])
    out = run_python(["-m", "turbolift", "-v", "--workers", "1", "app.py"], tmp_path, cache_dir, timeout=120,
                     TURBOLIFT_BUNDLE_CACHE=_bundle_cache(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "readied worker" in out.stderr
    assert out.stdout.strip() == "from pkg2.sub | from pkg2.sub"


def test_scans_of_imports_in_two_threads_never_fail():
    """CPython 3.11's AST constructor keeps its recursion depth per interpreter: two threads parsing at
    once fail with SystemError when a collection lets one run inside the other's parse (a callback makes
    every collection switch threads here; two plain ``ast.parse`` loops failed within 1-4 s so). The
    bundle builds' scans take turns (and one broken by a parse of the program's is made again), so a call's
    build beside another thread's never fails."""
    import gc
    import threading

    from turbolift._caller import import_scan

    source = "\n".join(f"import os\ndef f{i}(x):\n    return [x + {i} for _ in range(3)]" for i in range(400))
    errors: list = []

    def switch(phase, info):
        time.sleep(0)

    def scan_for(seconds: float) -> None:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop and not errors:
            try:
                assert import_scan.import_records(source) == [[-1, "os", []]] * 400
            except SystemError as exc:
                errors.append(exc)

    gc.callbacks.append(switch)
    try:
        threads = [threading.Thread(target=scan_for, args=(8.0,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        gc.callbacks.remove(switch)
    assert errors == []


def test_an_executor_in_a_plain_process_never_preloads(tmp_path, cache_dir):
    """What a ``turbolift.Executor`` of a program run without turbolift runs is known only as it is
    submitted: the one worker that ran the call imported the module, the other did not (with
    preloading, the submit's binding readies it too)."""
    files = {**PROJECT, "pool.py": """
        import json, os, pathlib, sys, time
        import turbolift
        directory = pathlib.Path(os.environ["PRELOAD_DIR"])
        (directory / "program.pid").write_text(str(os.getpid()))
        from proj.heavy import imported
        log = directory / "imports.log"
        with turbolift.Executor("local:2") as pool:
            pid, _ = pool.submit(imported).result()
            limit = time.monotonic() + float(sys.argv[1])   # for a preload of the other worker
            while time.monotonic() < limit and len(log.read_text().split()) < 2:
                time.sleep(0.05)
            print(json.dumps({"pid": pid, "imports": log.read_text().split()}))
    """}
    warm_up = tmp_path / "warm-up"
    warm_up.mkdir()
    _warmed(tmp_path, cache_dir, files, ["pool.py", "0"], launcher=(), PRELOAD_DIR=str(warm_up),
            PYTHONPATH=str(tmp_path))
    out = run_python(["pool.py", "8"], tmp_path, cache_dir, timeout=120, PRELOAD_DIR=str(tmp_path),
                     PYTHONPATH=str(tmp_path), TURBOLIFT_BUNDLE_CACHE=_bundle_cache(tmp_path))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["imports"] == [str(report["pid"])], (report, out.stderr)


@pytest.mark.parametrize("where", ["standard library", "installed distribution"])
def test_functions_of_the_environment_are_not_preloaded(tmp_path, cache_dir, where):
    """A worker imports the standard library and installed distributions from its own environment:
    there is nothing to ready it with, so no preload is even tried for them."""
    site = make_installed_library(tmp_path / "site" / "site-packages", "instlib", "1.0", """
        import turbolift

        @turbolift.on()
        def triple(x):
            return 3 * x
    """)
    write_files(tmp_path, {"env.py": """
        import json, sys, time
        import turbolift
        if sys.argv[1] == "standard library":
            function = turbolift.on()(json.dumps)
            argument = [1, 2]
        else:
            from instlib import triple as function
            argument = 14
        time.sleep(3)   # for a preload to be tried
        print(json.dumps({"result": function(argument)}))
    """})
    out = run_python(["-m", "turbolift", "-v", "--workers", "1", "env.py", where], tmp_path, cache_dir,
                     timeout=120, PYTHONPATH=str(site), TURBOLIFT_BUNDLE_CACHE=_bundle_cache(tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"result": "[1, 2]" if where == "standard library" else 42}
    assert "preload" not in out.stderr, out.stderr
