"""Running the main program (a script or ``-m`` module) as plain ``python`` would."""
from __future__ import annotations

import atexit
import builtins
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import types
from types import TracebackType
from typing import Optional

from ..errors import ConfigurationError
from . import hook


def verify_remote_modules() -> None:
    """Fail at start, not silently, when a ``--remote`` module does not exist.

    Called once ``sys.path`` is what the program will see. A missing
    function inside an existing module is reported when the module is
    imported (finding it would mean running the module early).
    """
    finder = hook.installed()
    if finder is None:
        return
    for module_name in finder.remote:
        if module_name == "__main__":
            raise ConfigurationError("--remote __main__:... is not supported: mark functions of the "
                                     "main script with @turbolift.on, or move them into a module")
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ConfigurationError(f"--remote {module_name}:...: no module named {module_name!r} "
                                     "can be imported from here; check the name and sys.path")


def prepare_main(script: Optional[str], module: Optional[str], argv: list[str]) -> None:
    """Give the program the ``sys.argv`` and ``sys.path[0]`` plain ``python`` would.

    Raises ConfigurationError for a missing script or ``--remote`` module.
    """
    if script is not None:
        if not os.path.exists(script):
            raise ConfigurationError(f"no such script: {script}")
        sys.argv = [script, *argv]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
    else:
        sys.argv = [str(module), *argv]
        sys.path[0] = os.getcwd()
    verify_remote_modules()


def user_frames(tb: Optional[TracebackType], as_module: bool = False) -> Optional[TracebackType]:
    """``tb`` without its leading frames of turbolift and runpy (those above the program's own).

    ``as_module``: the program ran as ``-m MODULE``, whose traceback under ``python -m`` starts with
    runpy's two frames (``_run_module_as_main``, ``_run_code``): the program's ``_run_code`` is kept,
    below the ``_run_module_as_main`` that started turbolift itself with ``python -m`` (from ``tb``
    when the exception went through it, else from the stack that runs now)."""
    first, runs_code = tb, None
    while first is not None and _internal(first.tb_frame.f_code.co_filename):
        runs_code = first if first.tb_frame.f_code.co_name == "_run_code" else runs_code
        first = first.tb_next
    if first is None:
        return tb
    if not as_module or runs_code is None or runs_code.tb_next is not first:
        return first
    if tb is not None and tb.tb_frame.f_code.co_name == "_run_module_as_main" and tb is not runs_code:
        tb.tb_next = runs_code
        return tb
    outer = sys._getframe()
    while outer.f_back is not None:
        outer = outer.f_back
    if outer.f_code.co_name != "_run_module_as_main" or not _internal(outer.f_code.co_filename):
        return first   # (the `turbolift` console script: no runpy above, so neither of its frames)
    return types.TracebackType(runs_code, outer, outer.f_lasti, outer.f_lineno)


def without_caller_tail(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """``tb`` cut where it enters turbolift's caller side, when nothing but turbolift, gRPC and the
    threading it waits with comes after: a Ctrl-C during a remote call then ends, as in plain python,
    at the marked function's call (the function's own frames ran on the worker) instead of in
    turbolift's wait for its reply. ``tb`` itself is shortened."""
    frame, last_kept = tb, None
    while frame is not None and not frame.tb_frame.f_code.co_filename.startswith(_CALLER_DIR):
        frame, last_kept = frame.tb_next, frame
    if frame is None or last_kept is None:
        return tb
    import threading

    import grpc

    tail = (_PACKAGE_DIR, threading.__file__, os.path.dirname(os.path.abspath(grpc.__file__)) + os.sep)
    rest = frame
    while rest is not None:
        if not rest.tb_frame.f_code.co_filename.startswith(tail):
            return tb   # a frame of the program's (a callback) comes later: shown whole
        rest = rest.tb_next
    last_kept.tb_next = None
    return tb


def _internal(filename: str) -> bool:
    return filename.startswith(_PACKAGE_DIR) or filename == runpy.__file__ or filename == "<frozen runpy>"


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_CALLER_DIR = os.path.join(_PACKAGE_DIR, "_caller") + os.sep


def run_main(script: Optional[str], module: Optional[str]) -> None:
    """Run the prepared script or module as ``__main__``."""
    # (Registered before the program runs, so that it runs after the program's own exit handlers.)
    atexit.register(_release_main, sys.modules["__main__"])
    if script is not None:
        _run_script(script)
    else:
        _run_module(str(module))


def _release_main(runner: types.ModuleType) -> None:
    """Let the program's ``__main__`` go when the interpreter ends, as plain ``python`` does.

    dill, imported by turbolift while the program's ``__main__`` was in place, keeps a reference to it
    (``_main_module``). Held past the program's end, that module's globals outlive the modules they
    use: a ``ProcessPoolExecutor`` left open was collected once ``concurrent.futures`` was torn down,
    and printed "Exception ignored in ... weakref_cb" at exit, which plain ``python`` does not.
    """
    for name in ("dill._dill", "dill.session"):
        held = sys.modules.get(name)
        if held is not None and getattr(held, "_main_module", runner) is not runner:   # (the program's)
            held._main_module = types.ModuleType("__main__")


class _CannotRun(Exception):
    """What ``python -m`` says, on one line, of a module it cannot run."""


def _run_module(name: str) -> None:
    """Run module ``name`` as ``python -m name`` does (runpy's own steps for its ``-m`` switch): the
    module stays ``__main__``, and ``sys.argv[0]`` its file, after it ran (for the program's exit
    handlers); one it cannot find or run ends the program with the one line plain python prints
    (``runpy.run_module`` puts the previous ones back when the module returns, and raises)."""
    try:
        name, spec, code = runpy._get_module_details(name, _CannotRun)   # type: ignore[attr-defined]
    except _CannotRun as exc:
        raise SystemExit(f"{sys.executable}: {exc}") from None
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv[0] = spec.origin
    runpy._run_code(code, main.__dict__, None, "__main__", spec)   # type: ignore[attr-defined]


def _run_script(script: str) -> None:
    """Run ``script`` as ``python script`` would: ``__main__`` is a fresh module whose ``__file__``
    and code name the absolute path, while ``sys.argv[0]`` stays as given (runpy.run_path would
    make the two agree, and write no differently named tracebacks than plain python does)."""
    path = os.path.abspath(script)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__cached__ = None
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    with open(path, "rb") as handle:
        code = compile(handle.read(), path, "exec", dont_inherit=True)
    exec(code, main.__dict__)
