"""Tell project code (shipped as source) from the environment (pinned).

A file is project code when it lives outside the standard library, outside
every site-packages directory and outside turbolift itself. Editable
installs of the user's own projects therefore count as project code.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import site
import sys
import sysconfig
from typing import Optional

_TURBOLIFT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Directories whose files are never project code, whatever imports them.
NEVER_SHIPPED = {".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", "node_modules",
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
    real = _real_path(path)
    parts = real.split(os.sep)
    if NEVER_SHIPPED.intersection(parts[:-1]):
        return False
    if any(real.startswith(root) for root in _environment_roots()):
        return False
    return not _inside_virtualenv(os.path.dirname(real))


def _real_path(path: str) -> str:
    """``os.path.realpath(path)``, resolving each directory once rather than once per file in it."""
    if os.path.islink(path):
        return os.path.realpath(path)
    directory, name = os.path.split(path)
    return os.path.join(_real_directory(directory or os.curdir), name)


@functools.lru_cache(maxsize=1024)
def _real_directory(directory: str) -> str:
    return os.path.realpath(directory)


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


def locate(name: str) -> Optional[tuple[str, bool]]:
    """(origin path, is_package) of module ``name``, or None; never imports anything."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None) if module is not None else None
    if spec is None:
        parent = name.rpartition(".")[0]
        if parent and parent not in sys.modules:
            return None  # never import a parent just to look: it runs code
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            return None
    if spec is None or not spec.origin or not spec.has_location:
        return None
    return spec.origin, spec.submodule_search_locations is not None
