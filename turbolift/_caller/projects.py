"""Tell project code (shipped as source) from the environment (pinned).

A file is project code when it lives outside the standard library, outside
every site-packages directory and outside turbolift itself. Editable
installs of the user's own projects therefore count as project code.
"""
from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
from typing import Optional

_TURBOLIFT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Directories whose files are never project code, whatever imports them.
_NEVER_SHIPPED = {".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", "node_modules",
                  "site-packages", "dist-packages"}


@functools.lru_cache(maxsize=1)
def _environment_roots() -> tuple[str, ...]:
    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path))
    for getter in (getattr(site, "getsitepackages", None), ):
        try:
            roots.update(os.path.realpath(p) for p in (getter() if getter else []))
        except Exception:
            pass
    try:
        roots.add(os.path.realpath(site.getusersitepackages()))
    except Exception:
        pass
    roots.add(_TURBOLIFT_DIR)
    return tuple(sorted(r + os.sep for r in roots))


@functools.lru_cache(maxsize=4096)
def is_project_file(path: Optional[str]) -> bool:
    """True for a Python source file that belongs to the user's project."""
    if not path or not path.endswith(".py"):
        return False
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if _NEVER_SHIPPED.intersection(parts[:-1]):
        return False
    if any(real.startswith(root) for root in _environment_roots()):
        return False
    return not _inside_virtualenv(os.path.dirname(real))


@functools.lru_cache(maxsize=1024)
def _inside_virtualenv(directory: str) -> bool:
    """True when a parent directory is a virtual environment (has pyvenv.cfg)."""
    if os.path.exists(os.path.join(directory, "pyvenv.cfg")):
        return True
    parent = os.path.dirname(directory)
    return parent != directory and _inside_virtualenv(parent)


def is_stdlib(top_level_name: str) -> bool:
    names = getattr(sys, "stdlib_module_names", None)
    if names is not None:
        return top_level_name in names or top_level_name in sys.builtin_module_names
    return top_level_name in sys.builtin_module_names  # pragma: no cover (3.9)
