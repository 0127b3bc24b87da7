"""A program's own output survives turbolift serialising its functions from many threads at once.

dill finds the globals of a function it serialises by value by printing
its disassembly into a swapped ``sys.stdout``; from several threads at
once that lost the program's prints, left a disassembly at the end of its
output ("82 RETURN_VALUE": the failure of the fan-out test that found it)
and could leave ``sys.stdout`` on a dead buffer. turbolift does the search
without printing (turbolift._wire.dill_globals).
"""
from __future__ import annotations

import dill.detect
from conftest import run_python, write_files

from turbolift._wire import dill_globals, serialize  # noqa: F401 (importing serialize installs it)

PROGRAM = """
    import sys, threading
    from turbolift import on

    sys.setswitchinterval(1e-6)   # threads take turns often: a swapped sys.stdout is seen by the others

    def make(n):
        # A fresh closure each time: serialised by value (with dill) on every call.
        def work(x):
            return x + n
        return on()(work)

    def caller(index, errors):
        try:
            for x in range(40):
                assert make(index)(x) == x + index
        except BaseException as exc:
            errors.append(repr(exc))

    errors = []
    threads = [threading.Thread(target=caller, args=(i, errors)) for i in range(6)]
    for thread in threads:
        thread.start()
    printed = 0
    while any(thread.is_alive() for thread in threads) and printed < 100_000:
        print(f"line {printed}")
        printed += 1
    for thread in threads:
        thread.join()
    print(f"line {printed}")
    print(f"done {printed + 1} {errors} {sys.stdout is sys.__stdout__}")
"""


def test_prints_of_a_program_whose_threads_ship_closures_all_arrive_once(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": PROGRAM})
    done = run_python(["-m", "turbolift", "--workers", "2", "app.py"], tmp_path, cache_dir, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and lines[-1].startswith("done "), lines[-3:]
    _, count, rest = lines[-1].split(" ", 2)
    assert rest == "[] True", rest   # no call failed; sys.stdout is the program's own again
    expected = [f"line {n}" for n in range(int(count))]
    strangers = sorted(set(lines[:-1]) - set(expected))[:5]
    lost = len(expected) - (len(lines) - 1)
    assert lines[:-1] == expected, f"{lost} lines lost; others mixed in: {strangers}"
    assert int(count) > 10   # the threads were shipping functions while the lines were printed


def test_the_search_finds_the_names_dills_own_finds():
    def sample(a):
        import math
        global COUNTER
        COUNTER = len([math.floor(x) for x in a if isinstance(x, float)])
        return lambda: sorted(a, key=abs) + list(map(str, missing_name))  # noqa: F821

    original = _dills_own()
    assert sorted(dill_globals.nestedglobals(sample)) == sorted(original(sample))
    assert {"COUNTER", "len", "isinstance", "float", "sorted", "abs", "list", "map", "str",
            "missing_name"} <= set(dill_globals.nestedglobals(sample))
    assert dill.detect.nestedglobals is dill_globals.nestedglobals


def _dills_own():
    """dill's nestedglobals, loaded afresh from its module's source (the installed one is replaced)."""
    import importlib.util

    spec = importlib.util.find_spec("dill.detect")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.nestedglobals
