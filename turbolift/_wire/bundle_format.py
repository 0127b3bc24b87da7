"""The bundle format both sides agree on.

A bundle is a zip archive named by its sha256 (``sha256:<hex>``) that holds
the shipped source files, in ``__turbolift__/bytecode`` the caller's
bytecode of those it has (checked against them when imported:
:mod:`turbolift._caller.bytecode`), and ``__turbolift__/manifest.json``: the
format number, the caller's Python (major.minor, implementation), the
shipped modules, the pinned third-party distributions, the installed
modules used by reference, the functions pickled by value, and the original
paths of shipped scripts (for readable remote tracebacks).
"""
from __future__ import annotations

import platform
import re
import struct
import sys
from typing import BinaryIO

MANIFEST = "__turbolift__/manifest.json"
FORMAT = 1
BUNDLE_ID = re.compile(r"sha256:[0-9a-f]{64}")
MAX_FILES = 20_000   # a worker refuses a bundle of more entries
# The caller's bytecode of the shipped sources, all in one entry (one entry deflates to a tenth of
# what one per module does): see turbolift._caller.bytecode. For each source, by its entry's name:
# the sizes of the name and of the bytes (two little-endian uint32), the name (UTF-8), the bytes.
BYTECODE = "__turbolift__/bytecode"
_BYTECODE_MAGIC = b"turbolift-bytecode-1\n"
_SIZES = struct.Struct("<II")
_MAX_NAME_BYTES = 4096


def python_tag() -> dict:
    """This interpreter as a manifest records it: ``{"python": "3.11", "implementation": "cpython"}``."""
    return {"python": "%d.%d" % sys.version_info[:2],
            "implementation": platform.python_implementation().lower()}


def pack_bytecode(compiled: dict[str, bytes]) -> bytes:
    """The entry ``BYTECODE`` holding ``compiled`` (name of a shipped source's entry -> its pyc)."""
    parts = [_BYTECODE_MAGIC]
    for name in sorted(compiled):
        encoded = name.encode()
        parts += [_SIZES.pack(len(encoded), len(compiled[name])), encoded, compiled[name]]
    return b"".join(parts)


def bytecode_index(stream: BinaryIO, total: int) -> dict[str, tuple[int, int]]:
    """Where each pyc of a ``BYTECODE`` entry of ``total`` bytes is, read from ``stream`` (a file, or
    the zip's entry): source entry name -> (offset, size) in the entry. Holds no more than a name in
    memory at a time (the bytes are seeked over). ValueError, saying where, for anything that
    :func:`pack_bytecode` did not make."""
    if stream.read(len(_BYTECODE_MAGIC)) != _BYTECODE_MAGIC:
        raise ValueError(f"{BYTECODE} does not start as it should")
    index: dict[str, tuple[int, int]] = {}
    offset = len(_BYTECODE_MAGIC)
    while offset < total:
        header = stream.read(_SIZES.size)
        if len(header) < _SIZES.size:
            raise ValueError(f"{BYTECODE} ends inside an entry's header, at byte {offset:,}")
        name_size, size = _SIZES.unpack(header)
        if name_size > _MAX_NAME_BYTES:
            raise ValueError(f"{BYTECODE} names an entry with {name_size:,} bytes, at byte {offset:,}")
        encoded = stream.read(name_size)
        start = offset + _SIZES.size + name_size
        offset = start + size
        if len(encoded) < name_size or offset > total:
            raise ValueError(f"{BYTECODE} ends inside an entry, which should end at byte {offset:,}")
        name = encoded.decode("utf-8")
        if name in index:
            raise ValueError(f"{BYTECODE} holds {name!r} twice")
        index[name] = (start, size)
        stream.seek(offset)
    return index
