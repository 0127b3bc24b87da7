"""The bytecode a bundle ships beside its sources, read by import from the bundle's bytecode file.

A bundle may carry, in one entry (``bundle_format.BYTECODE``), the
caller's bytecode of its sources as checked hash-based pycs
(:mod:`turbolift._caller.bytecode`). The entry is unpacked as the one file
it is; no ``.pyc`` file is made of it. On some disks creating a file costs
a tenth of a millisecond or more, and a 500-module bundle would need 500
more. Only where each pyc is in that file is kept in memory.

What reads a pyc is import's own ``SourceFileLoader``, through
``get_data``, when it asks for the bytecode of a shipped source at the
path it would read it from (so a worker with a ``pycache_prefix`` is
served too, and one with ``-O``, which would not read unoptimised
bytecode, is not), for the directories of bundles with bytecode only. So
import checks each pyc against the source beside it as it checks a
``.pyc`` file (a mismatch: the source is compiled, and its own ``.pyc``
written as usual), and a damaged one fails each import, as such a file
does. ``__cached__`` names the ``.pyc`` file import would have written.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
from importlib import machinery

from .._wire.bundle_format import BYTECODE, bytecode_index

# The absolute path of a shipped source -> (its bundle's bytecode file, offset, size of its pyc).
_where: dict[str, tuple[str, int, int]] = {}
_directories: tuple = ()   # the directories of bundles with bytecode, each ending with os.sep (replaced)
_changing = threading.Lock()


class _BundleSourceLoader(machinery.SourceFileLoader):
    """``SourceFileLoader`` that reads a shipped source's bytecode from its bundle's bytecode file."""

    def get_data(self, path: str) -> bytes:
        found = _where.get(os.path.abspath(self.path)) if path.endswith(".pyc") else None
        if found is None or sys.flags.optimize or path != importlib.util.cache_from_source(self.path):
            return super().get_data(path)
        bytecode_file, offset, size = found
        with open(bytecode_file, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)


def _finder_of_bundles(path: str) -> machinery.FileFinder:
    """The path hook: import's own ``FileFinder``, with the loader above, for a directory of a bundle."""
    if not isinstance(path, str) or not os.path.join(os.path.abspath(path), "").startswith(_directories):
        raise ImportError("not the directory of a bundle with bytecode")   # (the next hook's, then)
    return machinery.FileFinder(path, (machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
                                (_BundleSourceLoader, machinery.SOURCE_SUFFIXES),
                                (machinery.SourcelessFileLoader, machinery.BYTECODE_SUFFIXES))


def offer(directory: str) -> None:
    """Make the bytecode of the (checked) bundle unpacked at ``directory``, if it has any, what import
    reads for its sources. Call it before the directory is on ``sys.path``: a finder made for it
    earlier, without the hook, would not read it (the sources would be compiled). ValueError when
    the bytecode file is damaged."""
    global _directories
    root = os.path.abspath(directory)
    bytecode_file = os.path.join(root, *BYTECODE.split("/"))
    try:
        with open(bytecode_file, "rb") as handle:
            index = bytecode_index(handle, os.fstat(handle.fileno()).st_size)
    except FileNotFoundError:
        return
    with _changing:
        for name, (offset, size) in index.items():
            _where[os.path.join(root, *name.split("/"))] = (bytecode_file, offset, size)
        if os.path.join(root, "") not in _directories:
            _directories = (*_directories, os.path.join(root, ""))
        if _finder_of_bundles not in sys.path_hooks:
            sys.path_hooks.insert(0, _finder_of_bundles)
