"""The caller's compiled bytecode, shipped beside a bundle's sources so a fresh worker need not compile them.

Compiling is most of what importing a big project costs the first time:
for 500 generated modules, ~0.45 s of the ~1 s a worker without ``.pyc``
files spends importing them. The caller's own import has already written
those files (``__pycache__/<module>.<tag>.pyc``), so shipping them costs
little: they are read, never compiled here. They travel together in one
entry of the bundle (``bundle_format.BYTECODE``, keyed by their sources'
entries: one entry deflates to a tenth of what one per module does), and a
worker's import reads them from there, never from ``.pyc`` files of their
own (:mod:`turbolift._worker.shipped_bytecode`).

A shipped ``.pyc`` is the caller's, re-headed as a *checked* hash-based pyc
(PEP 552): its header holds the hash of the very source bytes shipped
beside it, and the worker's import hashes that source and uses the
bytecode only when they match; otherwise it compiles the source, as
without this. A ``.pyc`` is shipped only when the caller's Python would
itself take it for that source (same magic number, and the timestamp and
size, or the hash, its header records), and, for a timestamp, only if it
was written after the second the source was last changed in (a same-size
edit within that second escapes import's check): the worker then runs the
code the caller's import of these bytes runs. A file changed during the
walk, or in its last two seconds, ships none.

The price: the bytecode names the caller's path of each file
(``co_filename``), so the same code in two checkouts now makes two bundle
ids (each is uploaded once to a worker), where the sources alone made one.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Optional

from .bundle_entries import identity_of

_HASH_BASED = 0b01
_CHECK_SOURCE = 0b10
_HEADER = 16


def shipped_pyc(path: str, source: bytes, identity: Optional[list]) -> Optional[bytes]:
    """The checked hash-based pyc of the source file ``path`` whose bytes are ``source``; None when the
    caller holds no ``.pyc`` its Python would use for exactly these bytes (none written, ``-B``, stale,
    another interpreter's, unreadable).

    ``identity`` is the file's identity (:func:`.bundling._identity`) taken before ``source`` was read,
    None for a file changed too recently to be trusted unread: none is shipped then, nor when the file
    is not as it was when read (the bytes read may not be the ones the ``.pyc`` was compiled from).
    """
    if identity is None or sys.flags.optimize:   # (workers run unoptimised: they would not read it)
        return None
    try:
        cached = importlib.util.cache_from_source(path)
        with open(cached, "rb") as handle:
            data = handle.read()
            written = os.fstat(handle.fileno()).st_mtime_ns
        info = os.stat(path)
    except (OSError, NotImplementedError, ValueError):   # (NotImplementedError: no cache tag)
        return None
    if identity_of(info) != identity or len(source) != info.st_size:
        return None
    if len(data) <= _HEADER or data[:4] != importlib.util.MAGIC_NUMBER:
        return None
    flags = int.from_bytes(data[4:8], "little")
    digest = importlib.util.source_hash(source)
    if flags & ~(_HASH_BASED | _CHECK_SOURCE):   # import refuses other flags, and compiles the source
        return None
    if flags & _HASH_BASED:
        if data[8:16] != digest:
            return None
    elif data[8:16] != (int(info.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + \
            (info.st_size & 0xFFFFFFFF).to_bytes(4, "little"):   # the check import itself makes
        return None
    elif written // 1_000_000_000 <= info.st_mtime_ns // 1_000_000_000:
        # Written in the second the source was last modified: the source may have been rewritten
        # since, keeping its size, and import would not notice (it compares whole seconds). Its
        # own bytecode, then, is what a worker must not take for these bytes.
        return None
    header = importlib.util.MAGIC_NUMBER + (_HASH_BASED | _CHECK_SOURCE).to_bytes(4, "little") + digest
    return header + data[_HEADER:]
