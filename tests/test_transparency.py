"""An unmodified program behaves the same with its functions distributed.

Each test runs one program twice, with ``python`` and with ``python -m
turbolift``, and compares what it prints (the program prints what it
observed: values, types, identities, what was caught). Where the worker's
pid matters the program prints it separately, so that the comparison holds
and the call is still shown to have run elsewhere.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import TIMEOUT, both, child_env, run_python, write_files


def report(run) -> dict:
    """The JSON the program printed on its last line."""
    return json.loads(run.stdout.strip().splitlines()[-1])


# -- 2. output, logging and warnings ------------------------------------------------

OUTPUT_SCRIPT = """
    import concurrent.futures, logging, os, sys, warnings
    from turbolift import on

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s|%(levelname)s|%(message)s")

    @on()
    def chatty(n):
        print(f"out {n} line 1")
        print(f"out {n} line 2", flush=True)
        print(f"err {n}", file=sys.stderr)
        log = logging.getLogger("app.work")
        log.info("info %d", n)
        log.debug("debug %d is below the caller's level", n)
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed %d", n)
        return n

    @on()
    def warns():
        warnings.warn("careful now", DeprecationWarning)
        return os.getpid()

    if __name__ == "__main__":
        chatty(1)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:   # calls running at once
            list(pool.map(chatty, range(10, 14)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warns()
        for w in caught:
            print("warning:", w.category.__name__, w.message, os.path.basename(w.filename), w.lineno)
"""


def events(text: str) -> list[str]:
    """What the program's calls printed and logged, in any order: concurrent calls interleave their
    prints locally too (print writes the text and the newline apart), so lines are compared as tokens."""
    found = re.findall(r"(?:out|err) \d+(?: line \d)?|app\.work\|\w+\|\w+ \d+"
                       r"|ZeroDivisionError: division by zero|warning: .*", text)
    return sorted(found)


def test_output_logging_and_warnings_reach_the_caller_as_locally(tmp_path, cache_dir):
    local, remote = both(tmp_path, cache_dir, OUTPUT_SCRIPT)
    assert events(remote.stdout) == events(local.stdout)
    assert events(remote.stderr) == events(local.stderr)
    # Each line names where it came from, and the lines of concurrent calls stay whole.
    out_lines = [line for line in remote.stdout.splitlines() if line.startswith("(chatty ")]
    assert len(out_lines) == 10 and all(re.fullmatch(r"\(chatty local-\d\) out \d+ line [12]", line)
                                        for line in out_lines), out_lines
    assert "app.work|ERROR|failed 1" in remote.stderr and "ZeroDivisionError" in remote.stderr
    assert "debug" not in remote.stderr, "the caller's level decides"
    assert "warning: DeprecationWarning careful now app.py" in remote.stdout


def test_the_prefix_can_be_switched_off(tmp_path, cache_dir):
    local, remote = both(tmp_path, cache_dir, OUTPUT_SCRIPT, env={"TURBOLIFT_OUTPUT_PREFIX": "0"})
    assert events(remote.stdout) == events(local.stdout)
    assert not any(line.startswith("(chatty ") for line in remote.stdout.splitlines())


def test_bytes_written_to_the_streams_buffer_and_a_childs_output_arrive_as_locally(tmp_path, cache_dir):
    """sys.stdout.buffer travels in order with the text around it; the stream says its encoding and
    gives its file descriptor to a child process (whose output, written there directly, a local
    worker shows on the program's own output, in no set order with the call's)."""
    local, remote = both(tmp_path, cache_dir, """
        import subprocess, sys
        from turbolift import on

        @on()
        def report():
            print("text before")
            sys.stdout.buffer.write(b"bytes \\xc3\\xa9 then\\n")
            sys.stdout.flush()
            print("text after", "\\u00e9".encode(sys.stdout.encoding), sys.stderr.encoding is not None)
            sys.stdout.flush()
            child = [sys.executable, "-c", "print('from the child')"]
            return subprocess.run(child, stdout=sys.stdout).returncode

        print("returned", report())
    """, env={"TURBOLIFT_OUTPUT_PREFIX": "0"})
    expected = ["text before", "bytes \u00e9 then", "text after b'\\xc3\\xa9' True", "from the child",
                "returned 0"]
    assert local.stdout.splitlines() == expected
    lines = remote.stdout.splitlines()
    assert "from the child" in lines, remote.stderr
    lines.remove("from the child")
    assert lines == [line for line in expected if line != "from the child"], remote.stderr


# A module tells the program from a worker by the script it runs (a worker runs turbolift's own).
IMPORT_NOISE = {
    "noisy.py": """
        import logging, sys, warnings
        print("noisy: imported")
        logging.getLogger("noisy").warning("noisy: logged at import")
        warnings.warn("noisy: deprecated", DeprecationWarning, stacklevel=2)

        def helper(x):
            return 2 * x

        class Versioned:
            def __init__(self):
                self.version = 1

            def __setstate__(self, state):   # as scikit-learn's version check: only where it is unpickled
                if not sys.argv[0].endswith("app.py"):
                    warnings.warn("Versioned: unpickled by another version", UserWarning)
                self.__dict__.update(state)
    """,
    "marked.py": """
        import turbolift
        print("marked: imported")
        import warnings
        warnings.warn("marked: deprecated", DeprecationWarning, stacklevel=2)

        @turbolift.on()
        def apply(function, x):
            print("apply: ran")
            return function(x)

        @turbolift.on()
        def kind(obj):
            return type(obj).__name__
    """,
}


def test_what_a_module_prints_logs_and_warns_at_import_is_shown_once_as_locally(tmp_path, cache_dir):
    """A worker imports the function's module to load it, and the argument's module to unpickle it.
    The program imported both and showed what they printed, logged and warned: the workers' imports
    do not show it again (before: once more per worker, placed in turbolift's or importlib's code).
    A warning that unpickling an object raises on the worker is still the call's own."""
    local, remote = both(tmp_path, cache_dir, """
        import warnings
        warnings.simplefilter("default")
        import noisy
        from marked import apply, kind
        print([apply(noisy.helper, x) for x in range(4)])
        print(kind(noisy.Versioned()))
    """, files=IMPORT_NOISE)

    def noise(text: str) -> list[str]:
        return [line for line in text.splitlines()
                if ("noisy" in line or "marked" in line) and "Versioned" not in line]

    assert noise(remote.stdout) == noise(local.stdout), remote.stdout
    assert noise(remote.stderr) == noise(local.stderr), remote.stderr
    assert local.stdout.count("imported") == 2 and local.stderr.count("deprecated") == 2, local
    assert remote.stdout.count("apply: ran") == 4   # the call's own output is still forwarded
    assert "Versioned: unpickled by another version" not in local.stderr
    assert remote.stderr.count("UserWarning: Versioned: unpickled by another version") == 1, remote.stderr


def test_a_warning_only_a_workers_import_raises_is_shown_once(tmp_path, cache_dir):
    """A worker's environment may differ: a warning its import of the program's module raises, and the
    program's did not, is shown, once for all workers (the caller's filters decide, as for any)."""
    local, remote = both(tmp_path, cache_dir, """
        import fast
        print([fast.double(x) for x in range(4)])
    """, files={"fast.py": """
        import sys, warnings
        import turbolift
        if not sys.argv[0].endswith("app.py"):
            warnings.warn("fast: the compiled extension is missing, using the slow fallback", RuntimeWarning)

        @turbolift.on()
        def double(x):
            return 2 * x
    """})
    assert local.stdout == remote.stdout == "[0, 2, 4, 6]\n"
    assert "fallback" not in local.stderr
    assert remote.stderr.count("RuntimeWarning: fast: the compiled extension is missing") == 1, remote.stderr


def test_an_import_that_fails_on_a_worker_shows_what_it_printed_logged_and_warned(tmp_path, cache_dir):
    """Where an import fails on the worker and not in the program, what it made is the call's: printed,
    logged and warned, by the module and by what it imported before failing (it often says why). For
    the function's module and for an argument's, at each call that fails (a retry does not import again
    what succeeded the first time)."""
    write_files(tmp_path, {"reason.py": """
        import sys
        if not sys.argv[0].endswith("app.py"):
            print("reason: no licence file on this machine", file=sys.stderr)
    """, "picky.py": """
        import logging, sys, warnings
        import turbolift
        import reason
        if not sys.argv[0].endswith("app.py"):
            print("picky: PICKY_TOKEN is not set on this machine")
            logging.getLogger("picky").error("picky: a logged reason")
            warnings.warn("picky: a warned reason", RuntimeWarning)
            raise SystemExit(3)

        @turbolift.on()
        def work():
            return 1
    """, "refuses.py": """
        import sys
        if not sys.argv[0].endswith("app.py"):
            print("refuses: cannot be loaded here")
            raise RuntimeError("refuses cannot be imported")

        def f(x):
            return x
    """, "marked.py": """
        import turbolift

        @turbolift.on()
        def call(function):
            return function(1)
    """, "app.py": """
        import picky, refuses
        from marked import call
        for function, argument in [(picky.work, ()), (picky.work, ()), (call, (refuses.f,)),
                                   (call, (refuses.f,))]:
            try:
                function(*argument)
            except Exception as exc:
                print("raised:", type(exc).__name__, exc)
    """})
    out = run_python(["-m", "turbolift", "--workers", "1", "app.py"], tmp_path, cache_dir, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("importing picky on the worker failed: SystemExit: 3") == 2, out.stdout
    assert out.stdout.count("could not deserialise the arguments: RuntimeError: refuses cannot") == 2
    # Each failing call shows its reasons, forwarded as the call's (prefixed), the warning once per place
    # (the caller's filters); the sub-import, which succeeded, at the first try.
    assert out.stdout.count("(work local-0) picky: PICKY_TOKEN is not set on this machine") == 2, out.stdout
    assert out.stdout.count("(call local-0) refuses: cannot be loaded here") == 2, out.stdout
    assert out.stderr.count("(work local-0) reason: no licence file on this machine") == 1, out.stderr
    assert out.stderr.count("picky: a logged reason") == 2, out.stderr
    assert out.stderr.count("RuntimeWarning: picky: a warned reason") == 1, out.stderr
    assert "reason: no licence" not in out.stdout and "Traceback" not in out.stderr


def test_warnings_log_records_and_tracebacks_name_the_programs_files(tmp_path, cache_dir):
    """The worker runs the module from its bundle's copy; what the program sees names the program's file
    and module, so that warnings filters by module apply (before: neither held distributed)."""
    local, remote = both(tmp_path, cache_dir, """
        import logging, sys, traceback, warnings
        logging.basicConfig(stream=sys.stdout, format="%(pathname)s|%(filename)s|%(module)s|%(message)s")
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", message="filtered", module=r"pkg\\.lib$")
        from pkg.lib import work
        for _ in range(2):   # shown once per place, as locally
            try:
                work()
            except ValueError:
                traceback.print_exc(file=sys.stdout)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                work()
            except ValueError:
                pass
        print([(w.filename, w.lineno, str(w.message)) for w in caught])
    """, files={"pkg/__init__.py": "", "pkg/lib.py": """
        import logging, warnings
        import turbolift

        @turbolift.on()
        def work():
            warnings.warn("shown", UserWarning)
            warnings.warn("filtered", UserWarning)
            logging.getLogger("pkg").warning("logged")
            raise ValueError("boom")
    """})
    def frames_in_lib(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if 'lib.py", line' in line]

    assert frames_in_lib(remote.stdout) == frames_in_lib(local.stdout), remote.stdout
    assert frames_in_lib(local.stdout) == [f'File "{tmp_path / "pkg" / "lib.py"}", line 9, in work'] * 2
    lines = [line for line in remote.stdout.splitlines() if "|" in line or line.startswith("[(")]
    assert lines == [line for line in local.stdout.splitlines() if "|" in line or line.startswith("[(")]
    assert lines[0] == f"{tmp_path / 'pkg' / 'lib.py'}|lib.py|lib|logged", lines
    warned = [line for line in remote.stderr.splitlines() if ": UserWarning:" in line]
    assert warned == [line for line in local.stderr.splitlines() if ": UserWarning:" in line]
    assert warned == [f"{tmp_path / 'pkg' / 'lib.py'}:6: UserWarning: shown"], remote.stderr


def test_a_function_reads_its_packages_data_files_as_locally(tmp_path, cache_dir):
    local, remote = both(tmp_path, cache_dir, """
        from shapes.lib import read
        print(read())
    """, files={"shapes/__init__.py": "", "shapes/sizes.json": '{"square": 4}',
                "shapes/templates/box.txt": "[ ]", "shapes/lib.py": """
        import importlib.resources, json, os
        import turbolift

        @turbolift.on()
        def read():
            with open(os.path.join(os.path.dirname(__file__), "sizes.json")) as handle:
                sizes = json.load(handle)
            box = importlib.resources.files(__package__).joinpath("templates/box.txt").read_text()
            return sizes, box, os.getpid()
    """})
    local_result, remote_result = (run.stdout.strip().rsplit(",", 1)[0] for run in (local, remote))
    assert local_result == remote_result == "({'square': 4}, '[ ]'", remote.stdout
    assert local.stdout != remote.stdout   # (the pid: it ran on a worker)


def test_a_function_reads_the_programs_standard_input_as_locally(tmp_path, cache_dir):
    """input(), readline, read and iteration read the program's own standard input (before: a call that
    read it waited for ever on the worker's own, the pipe its program keeps open)."""
    write_files(tmp_path, {"app.py": """
        import sys
        import turbolift

        @turbolift.on()
        def converse():
            name = input("name? ")
            age = sys.stdin.readline()
            two = sys.stdin.read(2)
            raw = sys.stdin.buffer.readline()   # (b"": the text layer read ahead, locally as well)
            rest = [line.strip() for line in sys.stdin]
            try:
                input("more? ")
            except EOFError as exc:
                ended = repr(exc)
            return name, age, two, raw, rest, ended

        print(converse())
    """})
    runs = [subprocess.run([sys.executable, *launcher, "app.py"], cwd=tmp_path, input="ann\n42\nxyz\nlast\n",
                           env=child_env(cache_dir, TURBOLIFT_OUTPUT_PREFIX="0"), capture_output=True,
                           text=True, timeout=TIMEOUT)
            for launcher in ([], ["-m", "turbolift", "--workers", "1"])]
    assert [run.returncode for run in runs] == [0, 0], runs[1].stderr
    assert runs[1].stdout == runs[0].stdout == \
        "name? more? ('ann', '42\\n', 'xy', b'', ['z', 'last'], \"EOFError('EOF when reading a line')\")\n"


def test_reads_of_standard_input_no_call_makes_meet_its_end_instead_of_waiting(tmp_path, cache_dir):
    """The README's inherent difference: on a worker, a read at a module's import or in a thread the call
    started meets the end of the input at once (it cannot belong to a call: it must not wait for ever, nor
    take the call's input), while the call's own read still gets the program's."""
    write_files(tmp_path, {"reader.py": """
        import sys, threading
        import turbolift

        ON_WORKER = type(sys.stdin).__name__ == "CallerStdin"   # (the caller's import must not read it)
        AT_IMPORT = sys.stdin.readline() if ON_WORKER else "(the caller's import)"

        @turbolift.on()
        def read_three_ways():
            box = []
            thread = threading.Thread(target=lambda: box.append(sys.stdin.readline()))
            thread.start()
            thread.join(60)
            return AT_IMPORT, box, input()
    """, "app.py": "from reader import read_three_ways\nprint(read_three_ways())\n"})
    run = subprocess.run([sys.executable, "-m", "turbolift", "--workers", "1", "app.py"], cwd=tmp_path,
                         input="the call's line\n", env=child_env(cache_dir), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "('', [''], \"the call's line\")\n", run.stdout


def test_a_call_waiting_for_standard_input_ends_at_its_deadline(tmp_path, cache_dir):
    """A call with a timeout that reads input which never comes (the program's stdin is open and silent)
    raises TimeoutError at its deadline, and the program goes on and exits."""
    write_files(tmp_path, {"app.py": """
        import time
        import turbolift

        @turbolift.on(timeout=3)
        def ask():
            return input()

        started = time.monotonic()
        try:
            ask()
        except TimeoutError:
            print("timed out", time.monotonic() - started < 60)
    """})
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        program = subprocess.Popen([sys.executable, "-m", "turbolift", "--workers", "1", "app.py"],
                                   cwd=tmp_path, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                   env=child_env(cache_dir))
        try:
            returncode = program.wait(timeout=TIMEOUT)   # stdin stays open (and silent) meanwhile
        finally:
            program.kill()
            program.stdin.close()
    assert returncode == 0, (tmp_path / "err.txt").read_text()
    assert (tmp_path / "out.txt").read_text() == "timed out True\n"


def test_a_program_ends_as_quietly_as_locally_with_a_process_pool_left_open(tmp_path, cache_dir):
    """A ProcessPoolExecutor never shut down is collected at exit without a word, run as a script or as
    ``-m`` (before: turbolift's dill kept the program's ``__main__`` alive past ``concurrent.futures``,
    and the pool's collection printed "Exception ignored in ... weakref_cb ... AttributeError")."""
    local, remote = both(tmp_path, cache_dir, """
        import concurrent.futures
        from work import double
        pool = concurrent.futures.ProcessPoolExecutor(1)
        print(pool.submit(abs, -2).result(), double(2))
    """, files={"work.py": "import turbolift\n\n@turbolift.on()\ndef double(x):\n    return 2 * x\n"})
    as_module = run_python(["-m", "turbolift", "--workers", "1", "-m", "app"], tmp_path, cache_dir,
                           timeout=TIMEOUT)
    assert local.stdout == remote.stdout == as_module.stdout == "2 4\n", as_module.stderr
    assert local.stderr == remote.stderr == as_module.stderr == ""



def test_relative_paths_in_a_call_mean_what_they_mean_in_the_program(tmp_path, cache_dir):
    """Local workers run calls in the directory the program started in: a file read or written by a
    relative path is the program's (before: the workers' scratch directory, so a read failed and a
    written file went where no one looked, and was deleted at exit)."""
    work = """
        import os, turbolift

        @turbolift.on()
        def summarise(name):
            with open(name) as source, open("summary.txt", "a") as out:
                out.write(f"{len(source.read().split())} words\\n")
            return os.getpid(), os.path.dirname(__file__) == os.getcwd()
    """
    local, remote = both(tmp_path, cache_dir, """
        import os
        from work import summarise
        ran = {summarise("data/words.txt") for _ in range(3)}
        print(open("summary.txt").read(), end="")
        os.remove("summary.txt")
        with open("ran.txt", "a") as out:   # elsewhere? the module imported from here?
            out.write(f"{[(pid != os.getpid(), from_here) for pid, from_here in sorted(ran)][0]}\\n")
    """, files={"work.py": work, "data/words.txt": "one two three\n"})
    assert local.stdout == remote.stdout == "3 words\n" * 3, remote.stderr
    # Locally, then on workers, which still import the program's modules from bundles only.
    assert (tmp_path / "ran.txt").read_text() == "(False, True)\n(True, False)\n"


def test_daemon_threads_still_calling_at_exit_end_as_silently_as_locally(tmp_path, cache_dir):
    """Plain python stops daemon threads wherever they are when it ends; a daemon thread calling
    a marked function then must not print a traceback either (before: "ClusterError: this cluster
    has been shut down", from the calls made once the exit handler had stopped the cluster)."""
    local, remote = both(tmp_path, cache_dir, """
        import threading, time
        from work import inc

        def loop():
            n = 0
            while True:
                n = inc(n)

        for _ in range(4):
            threading.Thread(target=loop, daemon=True).start()
        time.sleep(1)
        print("main done")
    """, files={"work.py": "import turbolift\n\n@turbolift.on()\ndef inc(x):\n    return x + 1\n"})
    assert local.stdout == remote.stdout == "main done\n"
    assert local.stderr == remote.stderr == "", remote.stderr


def test_values_sent_during_a_call_take_the_project_modules_they_need_along(tmp_path, cache_dir):
    """A generator argument's items, pickled while the call runs, may refer to a project module that neither
    the function's module nor the call's arguments do (before: ModuleNotFoundError on the worker)."""
    local, remote = both(tmp_path, cache_dir, """
        from shapes import Square
        from work import total
        def squares():
            for n in range(3):
                yield Square(n)
        print(total(squares()), total(iter([Square(5)])))
    """, files={"shapes.py": """
        class Square:
            def __init__(self, side):
                self.side = side
    """, "work.py": """
        import turbolift

        @turbolift.on()
        def total(items):
            return sum(item.side for item in items)
    """})
    assert local.stdout == remote.stdout == "3 5\n", remote.stderr


def test_output_of_a_hand_started_worker_reaches_the_caller(tmp_path, cache_dir, start_worker):
    worker = start_worker()
    write_files(tmp_path, {"app.py": OUTPUT_SCRIPT})
    local = run_python(["app.py"], tmp_path, cache_dir, timeout=TIMEOUT)
    remote = run_python(["-m", "turbolift", "--cluster", f"grpc://{worker.address}", "app.py"], tmp_path,
                        cache_dir, timeout=TIMEOUT)
    assert remote.returncode == 0, remote.stderr
    assert events(remote.stdout) == events(local.stdout)
    assert events(remote.stderr) == events(local.stderr)
    assert re.search(r"^\(chatty \S+\) out 1 line 1$", remote.stdout, re.M)


# -- 3. names given to --remote, resolved as given -----------------------------------

SHAPES = """
    import os

    class Greeter:
        def __init__(self, greeting):
            self.greeting = greeting

        def hello(self, name):
            return f"{self.greeting}, {name}", os.getpid()

        @staticmethod
        def shout(text):
            return text.upper(), os.getpid()

        @classmethod
        def kind(cls, suffix):
            return cls.__name__ + suffix, os.getpid()

    class Polite(Greeter):
        pass

    class Doubler:
        def __call__(self, x):
            return 2 * x, os.getpid()

    INSTANCE = Greeter("Good day")
    hello = INSTANCE.hello          # a module-level bound method: a common library idiom
    double = Doubler()              # a callable instance
"""

SHAPES_SCRIPT = """
    import json, os
    import shapes

    results = [shapes.hello("Ada"), shapes.Greeter.shout("hey"), shapes.Greeter("x").shout("ho"),
               shapes.Greeter.kind("!"), shapes.Polite.kind("?"), shapes.double(21),
               shapes.Greeter("Hi").hello("Bob")]
    print(json.dumps({"values": [value for value, _ in results],
                      "remote": [pid != os.getpid() for _, pid in results]}))
"""


def test_remote_names_keep_their_shape_bound_static_class_methods_and_callable_instances(tmp_path, cache_dir):
    names = ["shapes:hello", "shapes:Greeter.shout", "shapes:Greeter.kind", "shapes:double",
             "shapes:Greeter.hello"]
    local, remote = both(tmp_path, cache_dir, SHAPES_SCRIPT, *(f"--remote={n}" for n in names),
                         files={"shapes.py": SHAPES})
    assert report(remote)["values"] == report(local)["values"] == [
        "Good day, Ada", "HEY", "HO", "Greeter!", "Polite?", 42, "Hi, Bob"]
    assert all(report(remote)["remote"]) and not any(report(local)["remote"])


# -- 4. turbolift's own code never goes through a stub ---------------------------------

def test_distributing_a_function_turbolift_itself_uses_does_not_deadlock(tmp_path, cache_dir):
    script = """
        import json, os
        print(json.dumps({"pid": os.getpid(), "value": [1, 2, 3]}))
        print(json.dumps({"again": True}))
    """
    local, remote = both(tmp_path, cache_dir, script, "--remote", "json:dumps", "--timeout", "60")
    assert json.loads(remote.stdout.splitlines()[1]) == json.loads(local.stdout.splitlines()[1])
    assert json.loads(remote.stdout.splitlines()[0])["value"] == [1, 2, 3]


# -- 5, 6. classes of the script, with metaclasses, and their identity -----------------

CLASSES_SCRIPT = """
    import abc, collections.abc, enum, json, os
    from turbolift import on

    class Shape(abc.ABC):
        @abc.abstractmethod
        def area(self): ...

    class Square(Shape):
        def __init__(self, side):
            self.side = side
        def area(self):
            return self.side ** 2

    class Frozen(collections.abc.Mapping):
        def __init__(self, data):
            self._data = dict(data)
        def __getitem__(self, key):
            return self._data[key]
        def __iter__(self):
            return iter(self._data)
        def __len__(self):
            return len(self._data)

    class Color(enum.Enum):
        RED = 1
        GREEN = 2
        def shout(self):
            return self.name + "!"

    class AppError(Exception):
        pass

    @on()
    def describe(shape, mapping, color):
        return shape.area(), sorted(mapping.items()), color.shout(), color, type(shape), os.getpid()

    @on()
    def echo(value):
        return value

    @on()
    def fails(kind):
        raise kind("raised on the worker")

    def inside():
        class Local:
            def __init__(self, x):
                self.x = x
        class LocalError(Exception):
            pass
        value = echo(Local(5))
        try:
            fails(LocalError)
            caught = "nothing"
        except LocalError as exc:
            caught = f"LocalError: {exc}"
        return type(value) is Local, isinstance(value, Local), value.x, caught

    area, items, shout, color, shape_type, pid = describe(Square(3), Frozen({"b": 2, "a": 1}), Color.GREEN)
    try:
        fails(AppError)
        caught = "nothing"
    except AppError as exc:
        caught = f"AppError: {exc}"
    print(json.dumps({
        "area": area, "items": items, "shout": shout, "color_is_the_member": color is Color.GREEN,
        "same_class": shape_type is Square, "echo_enum": echo(Color.RED) is Color.RED,
        "caught": caught, "local": inside(), "remote": pid != os.getpid()}))
"""


def test_classes_with_metaclasses_travel_and_come_back_as_the_callers_own(tmp_path, cache_dir):
    local, remote = both(tmp_path, cache_dir, CLASSES_SCRIPT)
    expected = report(local)
    got = report(remote)
    assert got.pop("remote") and not expected.pop("remote")
    assert got == expected
    assert got["same_class"] and got["color_is_the_member"] and got["local"][0]


# -- 7. arguments that refer to the caller's own modules -------------------------------

def test_arguments_that_need_other_project_modules_take_them_along(tmp_path, cache_dir):
    files = {
        "work.py": """
            import os
            def apply(function, value):
                return function(value), os.getpid()
            def measure(point):
                return point.norm2(), type(point).__module__
        """,
        "helpers.py": """
            def shout(text):
                return text.upper() + "!"
            class Point:
                def __init__(self, x, y):
                    self.x, self.y = x, y
                def norm2(self):
                    return self.x ** 2 + self.y ** 2
        """,
    }
    script = """
        import json, os
        import helpers, work
        value, pid = work.apply(helpers.shout, "hi")
        point = work.measure(helpers.Point(3, 4))
        print(json.dumps({"value": value, "point": point, "remote": pid != os.getpid()}))
    """
    local, remote = both(tmp_path, cache_dir, script, "--remote", "work:apply", "--remote", "work:measure",
                         files=files)
    assert report(remote)["remote"] and not report(local)["remote"]
    assert report(remote)["value"] == report(local)["value"] == "HI!"
    assert report(remote)["point"] == report(local)["point"] == [25, "helpers"]


# -- 8. exceptions -------------------------------------------------------------------------

EXCEPTIONS_SCRIPT = """
    import json, sys
    from turbolift import on

    class CodeError(Exception):
        def __init__(self, code, message):
            super().__init__(message)
            self.code = code

    @on()
    def coded():
        raise CodeError(404, "not here")

    @on()
    def chained():
        try:
            {}["key"]
        except KeyError as exc:
            raise ValueError("while looking") from exc

    @on()
    def in_context():
        try:
            [][1]
        except IndexError:
            raise RuntimeError("handling it")

    @on()
    def noted():
        exc = TypeError("typed")
        exc.add_note("a note")
        raise exc

    @on()
    def grouped():
        raise ExceptionGroup("two", [ValueError("v"), KeyError("k")])

    seen = {}
    try:
        coded()
    except CodeError as exc:
        seen["coded"] = [type(exc).__name__, exc.code, str(exc)]
    try:
        chained()
    except ValueError as exc:
        seen["chained"] = [str(exc), type(exc.__cause__).__name__, str(exc.__cause__)]
    try:
        in_context()
    except RuntimeError as exc:
        seen["context"] = [str(exc), type(exc.__context__).__name__]
    try:
        noted()
    except TypeError as exc:
        seen["notes"] = exc.__notes__
    try:
        grouped()
    except* ValueError as group:
        seen["group_values"] = [str(e) for e in group.exceptions]
    except* KeyError as group:
        seen["group_keys"] = [str(e) for e in group.exceptions]
    print(json.dumps(seen))
"""


def test_exceptions_keep_type_attributes_causes_context_notes_and_groups(tmp_path, cache_dir):
    local, remote = both(tmp_path, cache_dir, EXCEPTIONS_SCRIPT)
    assert report(remote) == report(local)
    assert report(remote)["coded"] == ["CodeError", 404, "not here"]


BUILTIN_SLOTS_SCRIPT = """
    import sys
    from turbolift import on

    @on()
    def fail(kind):
        if kind == "exit":
            sys.exit("bye")
        if kind == "exit 4":
            sys.exit(4)
        if kind == "stop":
            raise StopIteration(7)
        if kind == "name":
            return undefined_name  # noqa: F821
        if kind == "syntax":
            compile("x = (", "made.py", "exec")
        if kind == "decode":
            b"ok \\xff".decode("utf-8")
        if kind == "attribute":
            return sys.no_such_thing

    seen = []
    for kind in ("exit", "stop", "name", "syntax", "decode", "attribute"):
        try:
            fail(kind)
        except BaseException as exc:
            seen.append([type(exc).__name__, *[repr(getattr(exc, slot)) for slot in
                         ("code", "value", "name", "filename", "lineno", "msg", "start", "end", "reason")
                         if hasattr(exc, slot)]])
    print(seen)
    if len(sys.argv) > 1:
        fail(sys.argv[1])
"""


def test_built_in_exceptions_keep_what_their_init_sets_and_sys_exit_keeps_its_status(tmp_path, cache_dir):
    """``SystemExit.code``, ``StopIteration.value``, ``NameError.name``, ``SyntaxError``'s place and
    ``UnicodeError``'s range come back as raised (before: None, rebuilt without ``__init__``), so a
    marked function's ``sys.exit(4)`` ends the program with status 4 (it ended with 0)."""
    local, remote = both(tmp_path, cache_dir, BUILTIN_SLOTS_SCRIPT)
    assert local.stdout == remote.stdout, remote.stdout
    assert "['SystemExit', \"'bye'\"]" in remote.stdout and "'made.py'" in remote.stdout
    for how, status, stderr in (("exit", 1, "bye\n"), ("exit 4", 4, "")):
        ran = [run_python([*launcher, "app.py", how], tmp_path, cache_dir, timeout=TIMEOUT)
               for launcher in ((), ("-m", "turbolift", "--workers", "1"))]
        assert [(each.returncode, each.stderr) for each in ran] == [(status, stderr)] * 2, ran[1].stderr


def test_an_uncaught_remote_exception_shows_the_programs_frames_not_turbolifts(tmp_path, cache_dir):
    script = """
        from turbolift import on

        @on()
        def divide(x):
            return 1 / x

        def main():
            divide(0)

        main()
    """
    write_files(tmp_path, {"app.py": script})
    local = run_python(["app.py"], tmp_path, cache_dir, timeout=TIMEOUT)
    remote = run_python(["-m", "turbolift", "--workers", "1", "app.py"], tmp_path, cache_dir, timeout=TIMEOUT)
    assert local.returncode == remote.returncode == 1
    assert remote.stderr.strip().endswith("ZeroDivisionError: division by zero")
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', remote.stderr)
    assert ("runpy" not in remote.stderr) and ("cli.py" not in remote.stderr)
    ours = [name for path, name in frames if "/turbolift/" in path]
    assert len(ours) <= 1, frames   # at most the marked function's own frame
    assert [name for path, name in frames if path.endswith("app.py")] == ["divide", "<module>", "main"]


# -- 9. objects that cannot be copied fail loudly --------------------------------------------

UNCOPYABLE_SCRIPT = """
    import json, socket, threading
    from turbolift import on

    @on()
    def takes(first, second=None):
        return "ran"

    results = {}
    with open(__file__) as handle:
        cases = {"file": lambda: takes(handle), "lock": lambda: takes(1, second=threading.Lock()),
                 "socket": lambda: takes(socket.socket()), "generator": lambda: takes(i for i in range(3))}
        for name, case in cases.items():
            try:
                results[name] = case()
            except TypeError as exc:
                results[name] = str(exc)
    print(json.dumps(results))
"""


def test_objects_that_cannot_be_copied_are_refused_naming_the_argument(tmp_path, cache_dir):
    local, remote = both(tmp_path, cache_dir, UNCOPYABLE_SCRIPT)
    assert all(value == "ran" for value in report(local).values())
    got = report(remote)
    first = r"argument 1 \('first'\) cannot be sent: "
    assert re.search(first + r"a _io.TextIOWrapper .*pass its path", got["file"])
    assert re.search(r"argument 'second' cannot be sent: a _thread.lock .*synchronise in the caller",
                     got["lock"])
    assert re.search(first + r"a socket.socket .*pass the address", got["socket"])
    assert got["generator"] == "ran"   # an iterator argument streams from the caller, as it is read


def test_a_workers_exception_shows_the_programs_frames_and_at_most_one_of_turbolift(tmp_path, cache_dir):
    """From ``submit().result()``, a generator and ``aio`` the exception shows the frames the program's own
    code has locally (the function's frames are the worker's, in the cause); turbolift's side adds at most
    the one frame where it raises (before: five from ``submit``, two from a generator)."""
    local, remote = both(tmp_path, cache_dir, """
        import asyncio, os, traceback, turbolift

        @turbolift.on
        def boom(x):
            raise ValueError(x)

        @turbolift.on
        def gen():
            yield 1
            raise KeyError(2)

        async def awaited():
            await boom.aio(3)

        def show(label, action):
            try:
                action()
            except Exception as exc:
                inside = os.path.dirname(turbolift.__file__)
                frames = traceback.extract_tb(exc.__traceback__)
                print(label, "turbolift", sum(frame.filename.startswith(inside) for frame in frames))
                print(label, "program", [(os.path.basename(frame.filename), frame.name) for frame in frames
                                         if not frame.filename.startswith(inside)
                                         and frame.name not in ("boom", "gen")])

        show("submit", lambda: boom.submit(1).result())
        show("generator", lambda: list(gen()))
        show("aio", lambda: asyncio.run(awaited()))
    """)
    def lines(run, kind: str) -> list[str]:
        return [line for line in run.stdout.splitlines() if line.split()[1] == kind]

    assert lines(remote, "program") == lines(local, "program"), remote.stdout
    assert len(lines(remote, "program")) == 3, remote.stdout
    for line in lines(remote, "turbolift"):
        assert int(line.split()[2]) <= 1, remote.stdout
