"""Paths another process reported (places of warnings, log records, frames), as this one names them.

A worker runs the project's modules from the bundle it unpacked
(``<cache>/bundles/<digest>/pkg/mod.py``) and installed distributions and
the standard library from its own directories; the program imported the
same modules from its own files. A path that names the file of a module this
process has imported becomes this process's path of that file, with the
module's name: so the program's ``warnings`` filters by module
(``filterwarnings("ignore", module="pkg")``), its once-per-place memory of
warnings, ``linecache`` and tracebacks see what a local run gives them.

A path is taken to be a module's file when it ends with that module's own
path below a root (``pkg/mod.py`` for ``pkg.mod``): a bundle's directory, a
``site-packages`` or ``dist-packages`` directory, or the standard library's
``pythonX.Y``. Anything else is left as it came.
"""
from __future__ import annotations

import os
import re
import sys
import types
from typing import Optional

_BELOW_ROOT = re.compile(r".*[/\\](?:bundles[/\\][0-9a-f]{64}|site-packages|dist-packages|python\d+\.\d+)"
                         r"[/\\](.+)$")
_IN_BUNDLE = re.compile(r".*[/\\]bundles[/\\][0-9a-f]{64}[/\\](?!__turbolift__)(.+)$")
_FRAME_FILE = re.compile(r'^([ |]*File ")([^"\n]+)(", line \d+)', re.MULTILINE)   # "  | " in groups
_found: dict[str, tuple[str, types.ModuleType]] = {}   # a reported path -> (local path, module)
_MAX_FOUND = 4096


def module_of(path: str) -> Optional[tuple[str, types.ModuleType]]:
    """``(this process's path of the file, its module)`` for a file another process reported, or None."""
    hit = _found.get(path)
    if hit is not None and sys.modules.get(hit[1].__name__) is hit[1]:
        return hit
    main = sys.modules.get("__main__")
    if path and path == getattr(main, "__file__", None):   # a function of the program's script, by value
        return path, main   # type: ignore[return-value]
    matched = _BELOW_ROOT.match(path)
    if matched is None:
        return None
    relative = matched.group(1).replace("\\", "/")
    parts = relative.split("/")
    parts[-1] = parts[-1].split(".", 1)[0]   # mod.py, mod.cpython-311-x86_64-linux-gnu.so: mod
    if parts[-1] == "__init__":
        parts.pop()
    module = sys.modules.get(".".join(parts)) if parts else None
    local = getattr(module, "__file__", None) if module is not None else None
    if not isinstance(local, str) or not local.replace(os.sep, "/").endswith("/" + relative):
        return None
    if len(_found) < _MAX_FOUND:
        _found[path] = (local, module)
    return local, module


def local_path(path: str) -> str:
    """This process's path of the module file ``path`` names (``path`` itself when there is none): of a
    module it imported, else, for a bundle's copy, the file of that name on its ``sys.path``."""
    hit = module_of(path)
    if hit is not None:
        return hit[0]
    matched = _IN_BUNDLE.match(path)
    if matched is not None:
        for entry in sys.path:
            candidate = os.path.join(entry or os.curdir, *matched.group(1).replace("\\", "/").split("/"))
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
    return path


def local_traceback(text: str) -> str:
    """A formatted traceback with each frame's file as this process names it."""
    return _FRAME_FILE.sub(lambda found: found.group(1) + local_path(found.group(2)) + found.group(3), text)
