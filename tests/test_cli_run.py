"""``python -m turbolift`` end to end: real subprocesses, workers and sockets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO, child_env, parent_of, run_python, wait_gone, write_files

SIDE_EFFECT_SCRIPT = """
    import json, os, sys
    from turbolift import on

    # Top-level code with a visible side effect, and no main guard.
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "effects.log"), "a") as log:
        log.write(f"top-level ran in {os.getpid()}\\n")

    @on()
    def where(x):
        return os.getpid(), x * 2

    results = [where(i) for i in range(5)]
    print(json.dumps({"caller": os.getpid(), "pids": sorted({p for p, _ in results}),
                      "values": [v for _, v in results], "argv": sys.argv}))
"""


def test_script_without_main_guard_runs_top_level_code_once(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": SIDE_EFFECT_SCRIPT})
    out = run_python(["-m", "turbolift", "app.py", "--flag", "x"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["values"] == [0, 2, 4, 6, 8]
    assert report["argv"] == ["app.py", "--flag", "x"]
    assert report["caller"] not in report["pids"]  # the calls ran elsewhere
    log = (tmp_path / "effects.log").read_text().splitlines()
    assert log == [f"top-level ran in {report['caller']}"]


def test_package_with_relative_imports_is_shipped_as_a_bundle(tmp_path, cache_dir):
    write_files(tmp_path, {
        "shop/__init__.py": "VERSION = 'pkg-init'\n",
        "shop/pricing.py": """
            import os
            from turbolift import on
            from . import taxes
            from .util.rounding import cents

            @on()
            def total(prices):
                return cents(sum(prices) * (1 + taxes.RATE)), __file__, os.getpid()
        """,
        "shop/taxes.py": "RATE = 0.25\n",
        "shop/util/__init__.py": "",
        "shop/util/rounding.py": "def cents(x):\n    return round(x, 2)\n",
        "main.py": """
            import json, os
            from shop.pricing import total
            value, where, pid = total([1.0, 2.0, 0.5])
            print(json.dumps({"value": value, "where": where, "pid": pid, "me": os.getpid()}))
        """,
    })
    out = run_python(["-m", "turbolift", "main.py"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["value"] == 4.38
    assert report["pid"] != report["me"]
    # The worker imported the module from its bundle cache, not from the project.
    assert report["where"].startswith(str(cache_dir)), report["where"]
    assert report["where"].endswith(os.path.join("shop", "pricing.py"))
    local = run_python(["main.py"], tmp_path, cache_dir)
    assert json.loads(local.stdout)["value"] == 4.38


def test_marked_functions_of_two_modules_of_one_package_run_on_one_worker(tmp_path, cache_dir):
    """Each module's bundle holds the package: the worker imports it from the first one, and must still find
    the second module (and a third imported lazily) in the second bundle."""
    write_files(tmp_path, {
        "plant/__init__.py": "",
        "plant/roots.py": "from turbolift import on\n\n@on()\ndef water(x):\n    return ('roots', x)\n",
        "plant/leaves.py": """
            from turbolift import on

            @on()
            def light(x):
                from . import sun   # (imported lazily, on the worker)
                return ('leaves', sun.SHINE * x)
        """,
        "plant/sun.py": "SHINE = 3\n",
        "main.py": """
            from plant.roots import water
            from plant.leaves import light
            print(water(1), light(2), water(3))
        """,
    })
    distributed = run_python(["-m", "turbolift", "--workers", "1", "main.py"], tmp_path, cache_dir)
    assert distributed.returncode == 0, distributed.stderr
    local = run_python(["main.py"], tmp_path, cache_dir)
    assert distributed.stdout == local.stdout == "('roots', 1) ('leaves', 6) ('roots', 3)\n"


def test_run_module_form_and_exit_codes(tmp_path, cache_dir):
    write_files(tmp_path, {
        "tool/__init__.py": "",
        "tool/__main__.py": """
            import sys
            from turbolift import on

            @on()
            def double(x):
                return 2 * x

            print(double(int(sys.argv[1])))
            sys.exit(int(sys.argv[2]))
        """,
    })
    out = run_python(["-m", "turbolift", "--workers", "1", "-m", "tool", "21", "3"], tmp_path, cache_dir)
    assert out.stdout.strip() == "42"
    assert out.returncode == 3


def test_a_module_run_with_m_stays_main_for_its_exit_handlers_and_a_missing_one_is_named_as_python_does(
        tmp_path, cache_dir):
    """As under ``python -m``: after the module ran, its exit handlers still see it as ``__main__`` and
    ``sys.argv[0]`` as its file (before: runpy had put turbolift's runner back); a module that cannot be
    run gets plain python's one line and status 1, not a traceback."""
    write_files(tmp_path, {"tool/__init__.py": "", "tool/__main__.py": """
        import atexit, os, sys
        from turbolift import on

        @on()
        def double(x):
            return 2 * x

        @atexit.register
        def report():
            print(os.path.relpath(sys.modules["__main__"].__file__), os.path.relpath(sys.argv[0]))

        print(double(4))
    """})
    outs = [run_python([*launcher, "-m", "tool"], tmp_path, cache_dir)
            for launcher in ((), ("-m", "turbolift", "--workers", "1"))]
    expected = (0, "8\ntool/__main__.py tool/__main__.py\n", "")
    assert [(out.returncode, out.stdout, out.stderr) for out in outs] == [expected] * 2
    for missing in ("nosuch", "tool.nosuch"):
        outs = [run_python([*launcher, "-m", missing], tmp_path, cache_dir)
                for launcher in ((), ("-m", "turbolift", "--workers", "1"))]
        assert outs[0].returncode == outs[1].returncode == 1
        assert outs[0].stderr == outs[1].stderr, outs[1].stderr
        assert outs[1].stderr.startswith(f"{sys.executable}: No module"), outs[1].stderr


def test_an_uncaught_exception_of_a_module_run_with_m_shows_the_frames_python_m_shows(tmp_path, cache_dir):
    """Under ``python -m`` a module's traceback starts with runpy's two frames; so it does under
    ``python -m turbolift -m`` (before: turbolift left them out with its own), for an exception it
    prints and for a KeyboardInterrupt the interpreter does."""
    write_files(tmp_path, {"tool/__init__.py": "", "tool/__main__.py": """
        import sys
        from turbolift import on

        @on()
        def double(x):
            return 2 * x

        print(double(4))
        raise (KeyboardInterrupt if sys.argv[1:] == ["interrupt"] else ValueError)("boom")
    """})
    for args, status in (([], 1), (["interrupt"], -2)):
        outs = [run_python([*launcher, "-m", "tool", *args], tmp_path, cache_dir)
                for launcher in ((), ("-m", "turbolift", "--workers", "1"))]
        assert [out.returncode for out in outs] == [status] * 2, outs[1].stderr
        assert outs[0].stdout == outs[1].stdout == "8\n"
        assert outs[0].stderr == outs[1].stderr, outs[1].stderr
        assert outs[1].stderr.splitlines()[1].startswith('  File "<frozen runpy>"'), outs[1].stderr


def test_an_excepthook_that_raises_is_reported_as_the_interpreter_reports_it(tmp_path, cache_dir):
    """The program's ``sys.excepthook`` raises: "Error in sys.excepthook", its traceback, then the
    original exception, once each (before: the hook ran twice, and the second error's traceback went
    through turbolift's frames)."""
    write_files(tmp_path, {"app.py": """
        import sys
        from turbolift import on

        @on()
        def double(x):
            return 2 * x

        def hook(kind, value, tb):
            print("hook got", kind.__name__, file=sys.stderr)
            raise RuntimeError("hook broke")

        print(double(4))
        sys.excepthook = hook
        raise ValueError("boom")
    """})
    outs = [run_python([*launcher, "app.py"], tmp_path, cache_dir)
            for launcher in ((), ("-m", "turbolift", "--workers", "1"))]
    assert [out.returncode for out in outs] == [1, 1], outs[1].stderr
    assert outs[0].stdout == outs[1].stdout == "8\n"
    assert outs[0].stderr == outs[1].stderr, outs[1].stderr
    assert outs[1].stderr.count("hook got") == 1 and "Original exception was:" in outs[1].stderr


def test_exit_handlers_see_the_uncaught_exception_and_a_script_that_does_not_compile_shows_its_line(
        tmp_path, cache_dir):
    """As under plain python: an exit handler finds the uncaught exception in ``sys.last_type`` and
    ``sys.last_value`` (before: None), and a script with a syntax error shows its line, no frames
    (before: turbolift's run_main and compile frames, under a "Traceback" header)."""
    write_files(tmp_path, {"app.py": """
        import atexit, sys
        from turbolift import on

        @on()
        def double(x):
            return 2 * x

        atexit.register(lambda: print("seen", sys.last_type.__name__, sys.last_value, file=sys.stderr))
        print(double(4))
        raise ValueError("boom")
    """, "bad.py": "x = (\n"})
    for script in ("app.py", "bad.py"):
        outs = [run_python([*launcher, script], tmp_path, cache_dir)
                for launcher in ((), ("-m", "turbolift", "--workers", "1"))]
        assert [out.returncode for out in outs] == [1, 1], outs[1].stderr
        assert outs[0].stdout == outs[1].stdout
        assert outs[0].stderr == outs[1].stderr, outs[1].stderr
    assert outs[1].stderr.startswith(f'  File "{tmp_path / "bad.py"}", line 1'), outs[1].stderr


def test_uncaught_exception_is_reported_with_exit_code_1(tmp_path, cache_dir):
    write_files(tmp_path, {"boom.py": """
        from turbolift import on

        @on()
        def explode(n):
            raise ArithmeticError(f"bad input {n}")

        explode(5)
    """})
    out = run_python(["-m", "turbolift", "boom.py"], tmp_path, cache_dir)
    assert out.returncode == 1
    assert "ArithmeticError: bad input 5" in out.stderr
    assert 'raise ArithmeticError(f"bad input {n}")' in out.stderr  # the remote traceback, with source


def test_the_example_prints_the_same_locally_and_distributed(cache_dir):
    example = REPO / "examples"
    local = run_python(["app.py"], example, cache_dir)
    distributed = run_python(["-m", "turbolift", "app.py"], example, cache_dir)
    assert local.returncode == 0 and distributed.returncode == 0, distributed.stderr
    assert local.stdout == distributed.stdout
    assert len(local.stdout.splitlines()) >= 3


# -- no worker outlives its program -------------------------------------------

PIDS_SCRIPT = """
    import os, sys, time
    from turbolift import on, _runtime

    @on()
    def square(x):
        return x * x

    assert square(3) == 9
    print(" ".join(map(str, _runtime.worker_pids())), flush=True)
    mode = sys.argv[1]
    if mode == "raise":
        raise RuntimeError("uncaught")
    if mode == "wait":
        time.sleep(60)
"""


def _start(tmp_path, cache_dir, mode):
    write_files(tmp_path, {"pids.py": PIDS_SCRIPT})
    process = subprocess.Popen([sys.executable, "-m", "turbolift", "--workers", "2", "pids.py", mode],
                               cwd=tmp_path, env=child_env(cache_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    workers = [int(p) for p in line.split()]
    assert len(workers) == 2, (line, process.stderr.read() if process.poll() is not None else "")
    # The template that forked the workers (where there is one) must not outlive the program either.
    templates = {parent_of(worker) for worker in workers} - {process.pid, None}
    return process, workers + sorted(templates)



@pytest.mark.parametrize("mode", ["exit", "raise"])
def test_no_worker_survives_a_normal_or_failed_exit(tmp_path, cache_dir, mode):
    process, pids = _start(tmp_path, cache_dir, mode)
    assert process.wait(60) == (0 if mode == "exit" else 1)
    process.stdout.close()
    process.stderr.close()
    assert wait_gone(pids) == []


def _status_of_plain_python_killed_by(sig):
    program = "import time; print('ready', flush=True); time.sleep(60)"
    plain = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    with plain:
        assert plain.stdout.readline() == "ready\n"
        plain.send_signal(sig)
        return plain.wait(30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_no_worker_survives_a_killed_parent_which_exits_as_plain_python_would(tmp_path, cache_dir, sig):
    process, pids = _start(tmp_path, cache_dir, "wait")
    process.send_signal(sig)
    status = process.wait(30)
    process.stdout.close()
    process.stderr.close()
    assert wait_gone(pids) == [], f"workers {pids} outlived a parent killed by {sig.name}"
    assert status == _status_of_plain_python_killed_by(sig)


def test_sigterm_stops_a_distributed_test_suite_instead_of_failing_one_test(tmp_path, cache_dir):
    """``timeout`` must be able to stop ``python -m turbolift -m pytest`` (SIGTERM is not a test failure)."""
    write_files(tmp_path, {"test_slow.py": """
        import os, time
        from turbolift import on

        @on()
        def square(x):
            return x * x

        def test_first_waits():
            assert square(3) == 9
            open("started", "w").close()
            print("started", flush=True)
            time.sleep(60)

        def test_second_must_not_run():
            open("second-ran", "w").close()
    """})
    command = [sys.executable, "-m", "turbolift", "--workers", "1",
               "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_slow.py"]
    process = subprocess.Popen(command, cwd=tmp_path, env=child_env(cache_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(200):  # bounded: the first test says when it has started
            if "started" in process.stdout.readline() or process.poll() is not None:
                break
        assert (tmp_path / "started").exists()
        process.send_signal(signal.SIGTERM)
        status = process.wait(60)
    finally:
        process.kill()
        process.stdout.close()
    assert status == _status_of_plain_python_killed_by(signal.SIGTERM) == -signal.SIGTERM
    assert not (tmp_path / "second-ran").exists()


def test_classes_and_lambdas_of_the_main_script_travel_both_ways(tmp_path, cache_dir):
    write_files(tmp_path, {"shapes.py": """
        import os
        from turbolift import on

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        @on()
        def shift(point, dx):
            return Point(point.x + dx, point.y), os.getpid()

        @on()
        def make_adder(n):
            return lambda x: x + n

        moved, pid = shift(Point(1, 2), 3)
        print(type(moved) is Point, moved.x, moved.y, make_adder(5)(1), pid != os.getpid())
    """})
    out = run_python(["-m", "turbolift", "shapes.py"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "4", "2", "6", "True"]


def test_rebinding_a_global_of_the_main_script_reaches_the_worker(tmp_path, cache_dir):
    write_files(tmp_path, {"scaled.py": """
        from turbolift import on

        SCALE = 1

        @on()
        def scaled(x):
            return x * SCALE

        first = scaled(2)
        SCALE = 10
        futures = [scaled.submit(2) for _ in range(3)]
        print(first, scaled(2), [f.result() for f in futures], list(scaled.map([1, 2])))
    """})
    local = run_python(["scaled.py"], tmp_path, cache_dir)
    distributed = run_python(["-m", "turbolift", "scaled.py"], tmp_path, cache_dir)
    assert distributed.returncode == 0, distributed.stderr
    assert distributed.stdout == local.stdout == "2 20 [20, 20, 20] [10, 20]\n"


def test_rebinding_a_global_a_helper_or_a_class_of_the_script_reads_reaches_the_worker(tmp_path, cache_dir):
    """The helper and the class travel by value with the function: what they read is watched too."""
    write_files(tmp_path, {"indirect.py": """
        from turbolift import on

        SCALE = 2

        def helper(x):
            return x * SCALE

        class Scaler:
            @staticmethod
            def scale(x):
                return x * SCALE

        @on()
        def through_helper(x):
            return helper(x)

        @on()
        def through_class(x):
            return Scaler.scale(x)

        for SCALE in (2, 10, 100):
            print(through_helper(1), through_class(1), list(through_helper.map([1, 2])))
    """})
    local = run_python(["indirect.py"], tmp_path, cache_dir)
    distributed = run_python(["-m", "turbolift", "indirect.py"], tmp_path, cache_dir)
    assert distributed.returncode == 0, distributed.stderr
    assert distributed.stdout == local.stdout == "2 2 [2, 4]\n10 10 [10, 20]\n100 100 [100, 200]\n"


def test_calls_of_two_bundles_run_side_by_side_on_one_worker(tmp_path, cache_dir):
    """A call importing lazily is not disturbed by a call of another bundle arriving meanwhile."""
    write_files(tmp_path, {
        "a_helper.py": "VALUE = 'a ok'\n",
        "mod_a.py": """
            import time

            def f():
                time.sleep(1)
                import a_helper
                return a_helper.VALUE
        """,
        "mod_b.py": "def g():\n    return 'g ok'\n",
        "app.py": """
            import time
            from turbolift import on
            import mod_a, mod_b

            f, g = on()(mod_a.f), on()(mod_b.g)
            pending = f.submit()
            time.sleep(0.3)
            print(g(), pending.result())
        """,
    })
    out = run_python(["-m", "turbolift", "--workers", "1", "app.py"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "g ok a ok"
