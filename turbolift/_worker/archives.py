"""Checking and unpacking bundle archives, before any of their content is trusted or inflated.

Everything that can be judged from a zip's central directory is judged
there first: the number of entries, their names (no absolute paths, no
``..``, no drive letters, no duplicates), links, the compression methods
(stored or deflated only), encryption, the declared sizes of each entry
and of all of them, and the manifest's size. Only then is anything
inflated, and reading an entry never goes past its declared size, so a zip
bomb costs what its declaration says, which the limits bound.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
import zlib
from typing import Iterator

from .._wire.bundle_format import BYTECODE, FORMAT, MANIFEST, MAX_FILES, bytecode_index
from ..errors import BundleError

MAX_BUNDLE_BYTES = 512 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_ENTRIES = MAX_FILES
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_SKIPPED = "__pycache__"   # written by the worker's own imports, not by the bundle

_MANIFEST_FIELDS = {
    "format": int, "python": str, "implementation": str, "modules": dict, "requirements": dict,
    "installed": list, "pickled": dict, "sources": dict,
}


def _entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The entries, checked from the central directory alone; BundleError names what is wrong."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise BundleError(f"the bundle has {len(infos):,} entries; the limit is {MAX_ENTRIES:,}")
    total = sum(info.file_size for info in infos)
    if total > MAX_UNPACKED_BYTES:
        raise BundleError(f"the bundle unpacks to {total:,} bytes; the limit is {MAX_UNPACKED_BYTES:,}")
    seen: set[str] = set()
    files = {info.filename for info in infos if not info.is_dir()}
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in name:
            raise BundleError(f"bundle entry {name!r} would escape the bundle directory")
        if "." in parts or "" in parts[:-1] or (parts[-1] == "" and not info.is_dir()):
            # ("a/./b", "a//b"): another name of "a/b", which would be unpacked over it
            raise BundleError(f"bundle entry {name!r} is not a plain relative path")
        if any("/".join(parts[:depth]) in files for depth in range(1, len(parts))):
            raise BundleError(f"bundle entry {name!r} is inside another entry that is a file")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise BundleError(f"bundle entry {name!r} is a symbolic link; links are refused")
        if info.flag_bits & 0x1:
            raise BundleError(f"bundle entry {name!r} is encrypted; bundles are plain zip archives")
        if info.compress_type not in _METHODS:
            raise BundleError(f"bundle entry {name!r} uses compression method {info.compress_type}; only "
                              "stored and deflated entries are read")
        if name in seen:
            raise BundleError(f"bundle entry {name!r} appears twice")
        seen.add(name)
    return infos


def check(path: str) -> dict:
    """Check the archive at ``path`` (entries, then the manifest); return the manifest."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename: info for info in _entries(archive)}
            info = infos.get(MANIFEST)
            if info is None:
                raise BundleError(f"the bundle has no {MANIFEST}")
            if info.file_size > MAX_MANIFEST_BYTES:
                raise BundleError(f"the bundle's manifest declares {info.file_size:,} bytes; the limit is "
                                  f"{MAX_MANIFEST_BYTES:,}")
            with archive.open(info) as handle:
                manifest = json.loads(handle.read(MAX_MANIFEST_BYTES + 1))
            if BYTECODE in infos:
                _check_bytecode(archive, infos)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError) as exc:
        raise BundleError(f"the bundle is not a readable zip archive with a JSON manifest: {exc}") from None
    manifest = _checked_manifest(manifest)
    for key in ("modules", "pickled", "sources"):
        for name, entry in manifest.get(key, {}).items():
            if entry not in infos or entry == MANIFEST:
                raise BundleError(f"the bundle manifest's {key!r} names {entry!r} for {name!r}, which is not "
                                  "a file of the bundle")
    return manifest


def _checked_manifest(manifest: object) -> dict:
    if type(manifest) is not dict:
        raise BundleError("the bundle manifest is not a JSON object")
    for key, kind in _MANIFEST_FIELDS.items():
        if key in manifest and type(manifest[key]) is not kind:
            raise BundleError(f"the bundle manifest's {key!r} should be a {kind.__name__}")
    for key in ("modules", "requirements", "pickled", "sources"):
        if not all(type(k) is str and type(v) is str for k, v in manifest.get(key, {}).items()):
            raise BundleError(f"the bundle manifest's {key!r} should map strings to strings")
    if not all(type(name) is str for name in manifest.get("installed", [])):
        raise BundleError("the bundle manifest's 'installed' should list module names")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"the bundle has format {manifest.get('format')!r}; this worker reads format "
                          f"{FORMAT}: use the same turbolift version on both sides")
    return manifest


def _check_bytecode(archive: zipfile.ZipFile, infos: dict) -> None:
    """The bytecode entry is what the caller packs, for sources the bundle ships (read as a stream:
    however large it unpacks, it is never held in memory)."""
    info = infos[BYTECODE]
    try:
        with archive.open(info) as stream:
            index = bytecode_index(stream, info.file_size)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"the bundle's bytecode is damaged: {exc}") from None
    for name in index:
        if not name.endswith(".py") or name not in infos:
            raise BundleError(f"the bundle's bytecode names {name[:200]!r}, which is not a source file of "
                              "the bundle")


def extract(path: str, destination: str) -> None:
    """Unpack the (checked) archive at ``path`` into ``destination``, a new empty directory.

    Written here rather than with ``ZipFile.extractall``, which costs a
    fifth more for a bundle of a thousand small files: every name is
    checked once (no ``..``, no absolute path: :func:`_entries`), and
    nothing but this archive's own directories and regular files can be
    in ``destination``, so no link can redirect a write.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            root = os.path.realpath(destination)
            made = {root}
            for info in _entries(archive):
                target = os.path.normpath(os.path.join(root, info.filename))
                if not target.startswith(root + os.sep):
                    raise BundleError(f"bundle entry {info.filename!r} would escape the bundle directory")
                directory = target if info.is_dir() else os.path.dirname(target)
                if directory not in made:
                    os.makedirs(directory, exist_ok=True)
                    made.add(directory)
                if not info.is_dir():
                    with archive.open(info) as source, open(target, "xb") as handle:
                        shutil.copyfileobj(source, handle, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise BundleError(f"the bundle could not be unpacked: {exc}") from None


def _files_under(directory: str) -> Iterator[str]:
    for parent, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d != _SKIPPED]
        for name in files:
            yield os.path.relpath(os.path.join(parent, name), directory).replace(os.sep, "/")


def matches(directory: str, path: str) -> bool:
    """True when ``directory`` holds exactly the files of the archive at ``path``, with the same bytes
    (an extra file is a mismatch too: it could be imported). What is in a ``__pycache__`` directory is
    import's to check, on both sides: else an archive with such entries would never match."""
    try:
        with zipfile.ZipFile(path) as archive:
            wanted = {info.filename: info for info in archive.infolist()
                      if not info.is_dir() and _SKIPPED not in info.filename.split("/")[:-1]}
            if set(_files_under(directory)) != set(wanted):
                return False
            for name, info in wanted.items():
                with open(os.path.join(directory, name), "rb") as handle:
                    if handle.read() != archive.read(info):
                        return False
    except (OSError, zipfile.BadZipFile, zlib.error, NotImplementedError):
        return False
    return True
