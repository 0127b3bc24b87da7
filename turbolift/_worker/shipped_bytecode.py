"""The bytecode a bundle ships beside its sources, handed to import from memory rather than from files.

A bundle's ``__pycache__`` entries (the caller's bytecode, as checked
hash-based pycs: :mod:`turbolift._caller.bytecode`) are not unpacked.
On some disks creating a file costs a tenth of a millisecond or more, and
a 500-module bundle would need 500 more files. They are held in memory
instead, under the path import looks for each at
(``importlib.util.cache_from_source`` of the unpacked source), until import
reads it, once.

What reads them is import's own ``SourceFileLoader``, through
``get_data``, for the directories of bundles only. So import checks each
against the source beside it as it checks a ``.pyc`` file (a mismatch
means the source is compiled), and writes the bytecode of modules that
came without any, as usual.
"""
from __future__ import annotations

import os
import sys
import threading
from importlib import machinery

_waiting: dict[str, bytes] = {}   # absolute path of a .pyc -> the shipped bytes, until import reads them
_directories: tuple = ()          # bundle directories, each ending with os.sep (replaced, never changed)
_installed = threading.Lock()


class _BundleSourceLoader(machinery.SourceFileLoader):
    """``SourceFileLoader`` that finds a module's shipped bytecode where its ``.pyc`` file would be."""

    def get_data(self, path: str) -> bytes:
        shipped = _waiting.pop(path, None)
        return shipped if shipped is not None else super().get_data(path)


def _finder_of_bundles(path: str) -> machinery.FileFinder:
    """The path hook: import's own ``FileFinder``, with the loader above, for a directory of a bundle."""
    if not isinstance(path, str) or not (path + os.sep).startswith(_directories):
        raise ImportError("not a bundle directory")   # (the next hook's, then)
    return machinery.FileFinder(path, (machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
                                (_BundleSourceLoader, machinery.SOURCE_SUFFIXES),
                                (machinery.SourcelessFileLoader, machinery.BYTECODE_SUFFIXES))


def offer(directory: str, compiled: dict[str, bytes]) -> None:
    """Make ``compiled`` (archive name -> checked hash-based pyc) the bytecode import finds for the
    sources of the bundle unpacked at ``directory``. Call it before the directory is on ``sys.path``
    (a finder made for it earlier, without the hook, would not see the bytecode: it would compile)."""
    global _directories
    with _installed:
        if _finder_of_bundles not in sys.path_hooks:
            sys.path_hooks.insert(0, _finder_of_bundles)
        if os.path.join(directory, "") not in _directories:
            _directories = (*_directories, os.path.join(directory, ""))
    for name, data in compiled.items():
        _waiting[os.path.join(directory, *name.split("/"))] = data
