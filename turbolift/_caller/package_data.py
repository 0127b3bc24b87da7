"""The data files of a shipped package: what its code reads beside itself (`__file__`, importlib.resources).

A package's files that are not its modules travel with them: those in its
directory, and in its subdirectories that are not packages of their own (a
subpackage's travel with it, when it is shipped), ``.py`` files there
included (a script the code runs, a template). Never hidden files and
directories, compiled files, those that are never shipped (``__pycache__``,
``node_modules`` ...), virtual environments, files that cannot be read or
named in a zip, links to files outside the package, nor files beside
top-level modules (the project's root, with its data sets, notebooks and
outputs). Linked directories are followed, once. Every other file of a
package directory travels to the workers and their caches: keep secrets out
of package directories (``TURBOLIFT_DATA_LIMIT=0`` ships no data files).

Data files are shipped at best: a package whose data is over
``TURBOLIFT_DATA_LIMIT`` bytes (default 16 MiB) or 1,000 files ships none of
it (large data sets are better read from where the workers can reach them),
and the caller logs a warning naming it, so a call that does not read them
goes on as before.

What the bundle cache must check to reuse a bundle is returned too: the
identity of every data file and of every directory listed (a file added or
removed changes its directory's).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional

from .bundle_entries import identity_of
from .projects import NEVER_SHIPPED

log = logging.getLogger("turbolift")

DATA_LIMIT = int(os.environ.get("TURBOLIFT_DATA_LIMIT", 16 * 1024 * 1024))
MAX_DATA_FILES = 1000
_COMPILED = (".pyc", ".pyo", ".pyd", ".so")
_NOT_DATA = ("__init__.py", "pyvenv.cfg")   # a directory holding one of these is not a package's data
_warned: set[str] = set()


class _TooMuch(Exception):
    pass


def collect(package: str, init_path: str,
            identity: Callable[[str], Optional[list]]) -> tuple[dict[str, str], dict[str, list]]:
    """``({archive name: path} of package ``package``'s data files, {path: [identity, []]} of what was
    read to find them)``; ``init_path`` is the package's ``__init__.py``, ``identity`` that of a path."""
    files: dict[str, str] = {}
    read: dict[str, list] = {}
    seen: set[str] = set()
    total = [0]

    def walk(directory: str, prefix: str, top: bool) -> None:
        real = os.path.realpath(directory)
        if real in seen:   # (a link back up the tree)
            return
        seen.add(real)
        try:
            # A directory is trusted even when it changed a moment ago (unlike a file, whose same-size
            # rewrite within a clock tick could hide): the import that just made its __pycache__ would
            # otherwise keep every package's bundle out of the cache for two seconds.
            read[directory] = [identity_of(os.stat(directory)), []]
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:   # (gone meanwhile: its directory's identity changed, so no cached build trusts it)
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in NEVER_SHIPPED or not _zip_safe(name):
                continue
            try:
                if entry.is_dir():
                    if not any(os.path.exists(os.path.join(entry.path, each)) for each in _NOT_DATA):
                        walk(entry.path, f"{prefix}{name}/", False)
                elif entry.is_file() and not name.endswith(_COMPILED) and not (top and name.endswith(".py")):
                    if not os.access(entry.path, os.R_OK) or not _inside(entry.path, root):
                        continue   # (unreadable, or a link to a file outside the package: ~/.ssh/id_rsa)
                    total[0] += entry.stat().st_size
                    if total[0] > DATA_LIMIT or len(files) >= MAX_DATA_FILES:
                        raise _TooMuch
                    read[entry.path] = [identity(entry.path), []]
                    files[f"{prefix}{name}"] = entry.path
            except OSError:
                continue

    directory = os.path.dirname(init_path)
    root = os.path.realpath(directory)
    if DATA_LIMIT <= 0:   # (switched off)
        return files, read
    try:
        walk(directory, package.replace(".", "/") + "/", True)
    except _TooMuch:
        if package not in _warned:
            _warned.add(package)
            log.warning("turbolift: the data files of package %s (in %s) are not shipped to workers: over "
                        "%d files or %d bytes (TURBOLIFT_DATA_LIMIT); a function that reads them will not "
                        "find them there", package, directory, MAX_DATA_FILES, DATA_LIMIT)
        # (what was listed still decides whether a cached build holds: a file removed may bring it under)
        return {}, {path: entry for path, entry in read.items() if os.path.isdir(path)}
    return files, read


def _inside(path: str, root: str) -> bool:
    return os.path.realpath(path).startswith(root + os.sep)


def _zip_safe(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:   # (a name that is not valid in the file system's encoding)
        return False
    return True
