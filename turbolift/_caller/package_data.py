"""The data files of a shipped package: what its code reads beside itself (`__file__`, importlib.resources).

A package's files that are not code travel with its modules: those in its
directory, and in its subdirectories that are not packages of their own (a
subpackage's travel with it, when it is shipped). Never hidden files and
directories, those that are never shipped (``__pycache__``,
``node_modules`` ...), nor virtual environments. Files beside top-level
modules, in the project's root with its data sets, notebooks and outputs,
are not shipped.

What the bundle cache must check to reuse a bundle is returned too: the
identity of every data file and of every directory listed (a file added or
removed changes its directory's).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from .projects import NEVER_SHIPPED

# Code is shipped as the modules the walk finds (or, compiled for one platform, never).
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so")
_NOT_DATA = ("__init__.py", "pyvenv.cfg")   # a directory holding one of these is not a package's data


def collect(package: str, init_path: str,
            identity: Callable[[str], Optional[list]]) -> tuple[dict[str, str], dict[str, list]]:
    """``({archive name: path} of package ``package``'s data files, {path: [identity, []]} of what was
    read to find them)``; ``init_path`` is the package's ``__init__.py``, ``identity`` that of a path."""
    files: dict[str, str] = {}
    read: dict[str, list] = {}

    def walk(directory: str, prefix: str) -> None:
        try:
            read[directory] = [identity(directory), []]
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:   # (gone meanwhile: its directory's identity changed, so no cached build trusts it)
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name in NEVER_SHIPPED:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    # (a subpackage's data travel with it; a virtual environment never does)
                    if not any(os.path.exists(os.path.join(entry.path, name)) for name in _NOT_DATA):
                        walk(entry.path, f"{prefix}{entry.name}/")
                elif entry.is_file() and not entry.name.endswith(CODE_SUFFIXES):
                    read[entry.path] = [identity(entry.path), []]
                    files[f"{prefix}{entry.name}"] = entry.path
            except OSError:
                continue

    walk(os.path.dirname(init_path), package.replace(".", "/") + "/")
    return files, read
