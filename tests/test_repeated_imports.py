"""What a worker's repeated imports make is held back (``turbolift._worker.capture.RepeatedImports``).

A worker imports the modules the program imported (to load a function, to
unpickle arguments); the program showed what they printed, logged and
warned. These tests drive the worker's real routers in a process of their
own (they replace ``sys.stdout``) and read the frames a call would send.
The end-to-end behaviour is in ``test_transparency.py`` and ``test_preload.py``.
"""
from __future__ import annotations

import json

from conftest import run_python, write_files

MODULES = {
    "chatty.py": """
        import logging, warnings
        print("chatty: imported")
        logging.getLogger("chatty").warning("chatty: logged")
        warnings.warn("chatty: warned", DeprecationWarning)

        class Thing:
            def __setstate__(self, state):
                warnings.warn("Thing: unpickled here", UserWarning)
                self.__dict__.update(state)
    """,
    "broken.py": """
        print("broken: the reason")
        raise RuntimeError("broken cannot be imported")
    """,
    "later.py": """
        print("later: imported")
    """,
    "probe.py": """
        import importlib, json, pickle
        from turbolift._worker import capture

        capture.install()
        frames = []
        events = capture.Events(frames.append)
        capture.attach(events)

        def sent():
            found = []
            for frame in frames:
                kind = frame.WhichOneof("frame")
                event = getattr(frame, kind)
                found.append([kind, event.text if kind == "output" else event.message])
            frames.clear()
            return found

        report = {}
        with capture.RepeatedImports():
            importlib.import_module("chatty")
            print("body: not an import")
        events.flush()
        report["import"] = sent()
        # Protocol 0 by hand: chatty.Thing(), then __setstate__({'v': 1}) (the module is imported by now).
        value = capture.repeating_imports(pickle.loads, b"cchatty\\nThing\\n(tR(dVv\\nI1\\nsb.")
        report["setstate"] = [sent(), value.v]
        try:
            with capture.RepeatedImports():
                importlib.import_module("broken")
        except RuntimeError as exc:
            report["failed"] = [sent(), str(exc)]
        capture.RepeatedImports().__enter__()   # never left, as when an interrupt lands in __exit__
        capture.detach(events)                  # where the call ends
        capture.attach(events)                  # the next call
        importlib.import_module("later")
        events.flush()
        report["after"] = sent()
        capture.detach(events)
        print(json.dumps(report), file=capture._originals[capture.STDOUT])
    """,
}


def test_held_imports_forwarded_failures_and_a_scope_left_open(tmp_path, cache_dir):
    write_files(tmp_path, MODULES)
    out = run_python(["probe.py"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # What the import made is held and dropped; what the scope's own code printed is sent.
    assert report["import"] == [["output", "body: not an import\n"]]
    # A warning unpickling raises outside any import is the call's.
    assert report["setstate"] == [[["warning", "Thing: unpickled here"]], 1]
    # A failed import's reasons are sent, before its exception goes on.
    assert report["failed"] == [[["output", "broken: the reason\n"]], "broken cannot be imported"]
    # A scope that was never left is closed where the call ends: later imports are not held.
    assert report["after"] == [["output", "later: imported\n"]]
    assert out.stderr == "", out.stderr
