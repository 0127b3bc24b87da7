"""Entries of built bundles: what a build depended on, and whether it still holds.

A module's bundle is a function of the files its import walk read and of
the answers its module lookups got (plus the interpreter, turbolift's own
code and the pinned versions). An entry (stored by :mod:`.bundle_cache`)
records all of these; :func:`still_valid` checks them cheaply (a stat per
file, a lookup per name, the pins from :mod:`.pins`) and says whether a
fresh build would give the very same archive, so a hit is byte-identical
to a build. That holds for entries this user's builds wrote: the cache
(:mod:`.bundle_cache`) only returns such entries, undamaged, and never
re-reads the files themselves (a file rewritten with its size, mtime,
ctime, inode and device all unchanged is not noticed; the ctime cannot be
set back without changing the clock). One exception, by design: the
caller's ``.pyc`` files are not recorded. The bytecode an entry holds is
checked against the source it travels with (:mod:`.bytecode`), so it stays
right for that source even after the ``.pyc`` files are gone or rewritten;
a fresh build might ship more or less of it, never other code.
:func:`known_records` returns an entry's import records only when they all
have the shape of import records.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from typing import Any, Optional

from .._version import __version__
from .._wire.bundle_format import FORMAT
from .pins import pinned_requirements
from .projects import is_project_file, locate

CACHE_FORMAT = 1
# The modules whose code decides what a bundle holds: an edited turbolift (a
# development checkout) must not be answered from entries its old code made.
_DECIDING = ("bundling.py", "bytecode.py", "import_scan.py", "projects.py", "pins.py", "bundle_cache.py",
             "bundle_entries.py", os.path.join(os.pardir, "_wire", "bundle_format.py"))


@functools.lru_cache(maxsize=1)
def _code_identity() -> list:
    here = os.path.dirname(os.path.abspath(__file__))
    identity = []
    for name in _DECIDING:
        try:
            info = os.stat(os.path.join(here, name))
            identity.append([name, info.st_size, info.st_mtime_ns])
        except OSError:
            identity.append([name, None])
    return identity


def identity_of(info: os.stat_result) -> list:
    """What tells a file's content changed without reading it: size, mtime, ctime, inode, device."""
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]


def bundle_key(kind: str, name: str, limit: int) -> str:
    """The key of the bundle of ``kind`` (e.g. "module") ``name``, in this interpreter and program.

    The key only says where to look; :func:`still_valid` decides whether the
    entry found there is what a fresh build would give. Only the ``str``
    entries of ``sys.path`` count (import ignores the others). Raises
    OSError when the working directory is gone: the caller then does
    without the cache.
    """
    path = [entry for entry in sys.path if isinstance(entry, str)]
    return json.dumps(["bundle", CACHE_FORMAT, __version__, FORMAT, sys.version,
                       sys.implementation.cache_tag, sys.executable, sys.prefix, limit, path,
                       os.getcwd(), _code_identity(), kind, name])


def header_of(collector: Any, bundle: Any) -> dict:
    """The header recording ``bundle`` and everything its build depended on (``collector``'s walk)."""
    return {"id": bundle.id, "manifest": bundle.manifest, "files": [list(f) for f in bundle.files],
            "read": [[path, identity] for path, (identity, _) in sorted(collector.read.items())],
            # (a string, decoded only on a miss: a hit has no use for it)
            "records": json.dumps([records for _, (_, records) in sorted(collector.read.items())]),
            "lookups": [[name, None if found is None else list(found)]
                        for name, found in sorted(collector.lookups.items())],
            "third_party": sorted(collector.third_party)}


def still_valid(header: dict, data: Optional[bytes]) -> bool:
    """True when a fresh build now would give the bundle ``header`` records (byte for byte).

    The walk that made it is a function of the files it read and of the
    answers of its module lookups; so when every file's identity is
    unchanged, every lookup answers as it did, and the pinned versions are
    the same, a fresh walk and build give the same archive.
    """
    if data is None or header.get("id") != "sha256:" + hashlib.sha256(data).hexdigest():
        return False
    for path, identity in header["read"]:
        try:
            info = os.stat(path)
        except OSError:
            return False
        if identity is None or identity != identity_of(info):
            return False
    for name, recorded in header["lookups"]:
        located = locate(name)
        now = None if located is None else [*located, is_project_file(located[0])]
        if now != recorded:
            return False
    return pinned_requirements(set(header["third_party"])) == header["manifest"]["requirements"]


def _is_identity(value: Any) -> bool:
    return value is None or (isinstance(value, list) and len(value) == 5
                             and all(type(each) is int for each in value))


def _is_record(record: Any) -> bool:
    """True for one import record as :func:`.import_scan.import_records` makes them."""
    if not (isinstance(record, list) and len(record) == 3 and type(record[0]) is int and record[0] >= -1
            and isinstance(record[2], list) and all(isinstance(name, str) for name in record[2])):
        return False
    return isinstance(record[1], str) or (record[1] is None and record[0] > 0)


def known_records(header: dict) -> dict:
    """``path -> (identity, import records)`` of an entry's files, to spare parsing the unchanged ones.

    Empty unless the entry's records all have the shape of records (never raises).
    """
    try:
        records = json.loads(header["records"])
        read = header["read"]
        if not (isinstance(records, list) and isinstance(read, list) and len(records) == len(read)):
            return {}
        known = {}
        for each, file_records in zip(read, records):
            if not (isinstance(each, list) and len(each) == 2 and isinstance(each[0], str)
                    and _is_identity(each[1]) and isinstance(file_records, list)
                    and all(_is_record(record) for record in file_records)):
                return {}
            known[each[0]] = (each[1], file_records)
        return known
    except Exception:
        return {}
