"""What a worker's imports of the program's modules make is held, then sorted (``_worker.repeated_imports``).

These tests drive the worker's real routers in a process of their own (they
replace ``sys.stdout``) and read the frames a call would send. The end-to-end
behaviour is in ``test_transparency.py`` and ``test_preload.py``.
"""
from __future__ import annotations

import json

from conftest import run_python, write_files

MODULES = {
    "chatty.py": """
        import logging, warnings
        print("chatty: imported")
        logging.getLogger("chatty").warning("chatty: logged")
        warnings.warn("chatty: warned", UserWarning)

        class Thing:
            def __setstate__(self, state):
                warnings.warn("Thing: unpickled here", UserWarning)
                if state.get("fail"):
                    raise FileNotFoundError("Thing: no file")
                self.__dict__.update(state)
    """,
    "reason.py": """
        print("reason: the licence is missing")
    """,
    "broken.py": """
        import logging
        import reason   # succeeds, and says why broken fails
        BIG = bytearray(50_000_000)
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("broken").exception("broken: failed")
        raise RuntimeError("broken cannot be imported")
    """,
    "later.py": """
        print("later: imported")
    """,
    "probe.py": """
        import gc, importlib, json, pickle, sys
        from turbolift._worker import capture, repeated_imports

        capture.install()
        frames = []
        events = capture.Events(frames.append)
        capture.attach(events)

        def sent():
            found = []
            for frame in frames:
                kind = frame.WhichOneof("frame")
                event = getattr(frame, kind)
                if kind == "output":
                    found.append([kind, event.text])
                elif kind == "warning":
                    found.append([kind, event.message, event.at_import])
                else:
                    found.append([kind, event.message, event.exc_text.splitlines()[-1]])
            frames.clear()
            return found

        def loads(data):
            return capture.repeating_imports(pickle.loads, data)

        report = {}
        scope = repeated_imports.RepeatedImports()
        with scope:
            importlib.import_module("chatty")
            print("body: not an import")
        capture.give_held(scope)
        events.flush()
        report["import"] = sent()
        # Protocol 0 by hand: chatty.Thing(), then __setstate__({'v': 1}), in a module imported by now.
        report["setstate"] = [loads(b"cchatty\\nThing\\n(tR(dVv\\nI1\\nsb.").v, sent()]
        # A module imported by the unpickling that then fails in __setstate__: the import went well.
        sys.modules.pop("chatty")
        try:
            loads(b"cchatty\\nThing\\n(tR(dVfail\\nI1\\nsb.")
        except FileNotFoundError as exc:
            report["setstate failed"] = [str(exc), sent()]
        try:
            capture.repeating_imports(importlib.import_module, "broken")
        except RuntimeError as exc:
            report["failed"] = [str(exc), sent()]
        gc.collect()
        report["kept"] = any(isinstance(o, bytearray) and len(o) == 50_000_000 for o in gc.get_objects())
        repeated_imports.RepeatedImports().__enter__()   # never left, as when an interrupt lands in __exit__
        capture.detach(events)                           # where the call ends
        capture.attach(events)                           # the next call
        importlib.import_module("later")
        events.flush()
        report["after"] = sent()
        capture.detach(events)
        print(json.dumps(report), file=capture._originals[capture.STDOUT])
    """,
}


def test_held_imports_are_sorted_by_how_they_ended(tmp_path, cache_dir):
    write_files(tmp_path, MODULES)
    out = run_python(["probe.py"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # A successful import's output and records are dropped, its warning marked as made at import (the
    # caller shows it unless the program showed it); what the scope's code printed itself is sent.
    assert report["import"] == [["output", "body: not an import\n"], ["warning", "chatty: warned", True]]
    # A warning unpickling raises outside any import is the call's.
    assert report["setstate"] == [1, [["warning", "Thing: unpickled here", False]]]
    # Unpickling that fails after an import that succeeded: that import's output is still not shown (and
    # its warning comes when the unpickling has ended).
    assert report["setstate failed"] == ["Thing: no file", [["warning", "Thing: unpickled here", False],
                                                           ["warning", "chatty: warned", True]]]
    # A failed import gives all it made, its sub-import's included; the record formatted, its traceback
    # (and the module's globals, through its frames) not kept.
    assert report["failed"] == ["broken cannot be imported", [
        ["output", "reason: the licence is missing\n"],
        ["log", "broken: failed", "ZeroDivisionError: division by zero"]]]
    assert report["kept"] is False
    # A scope that was never left is closed where the call ends: later imports are not held.
    assert report["after"] == [["output", "later: imported\n"]]
    assert out.stderr == "", out.stderr
