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

MANIFEST = "__turbolift__/manifest.json"
FORMAT = 1
BUNDLE_ID = re.compile(r"sha256:[0-9a-f]{64}")
# The caller's bytecode of the shipped sources, all in one entry (one entry deflates to a tenth of
# what one per module does, and is read at once): see turbolift._caller.bytecode.
BYTECODE = "__turbolift__/bytecode"
_BYTECODE_MAGIC = b"turbolift-bytecode-1\n"
_SIZES = struct.Struct("<II")


def python_tag() -> dict:
    """This interpreter as a manifest records it: ``{"python": "3.11", "implementation": "cpython"}``."""
    return {"python": "%d.%d" % sys.version_info[:2],
            "implementation": platform.python_implementation().lower()}


def pack_bytecode(compiled: dict[str, bytes]) -> bytes:
    """The entry ``BYTECODE`` holding ``compiled`` (path of a ``.pyc`` in the bundle -> its bytes)."""
    parts = [_BYTECODE_MAGIC]
    for name in sorted(compiled):
        encoded = name.encode()
        parts += [_SIZES.pack(len(encoded), len(compiled[name])), encoded, compiled[name]]
    return b"".join(parts)


def unpack_bytecode(data: bytes) -> dict[str, bytes]:
    """What :func:`pack_bytecode` packed; ValueError, saying where, for anything else."""
    if not data.startswith(_BYTECODE_MAGIC):
        raise ValueError(f"{BYTECODE} does not start as it should")
    compiled, offset = {}, len(_BYTECODE_MAGIC)
    while offset < len(data):
        if offset + _SIZES.size > len(data):
            raise ValueError(f"{BYTECODE} ends inside an entry's header, at byte {offset:,}")
        name_size, size = _SIZES.unpack_from(data, offset)
        start = offset + _SIZES.size
        offset = start + name_size + size
        if offset > len(data):
            raise ValueError(f"{BYTECODE} ends inside an entry, which should end at byte {offset:,}")
        name = data[start:start + name_size].decode("utf-8", "strict")
        if name in compiled:
            raise ValueError(f"{BYTECODE} holds {name!r} twice")
        compiled[name] = data[start + name_size:offset]
    return compiled
