"""A per-user disk cache of what building bundles costs: entries keyed by a string.

An entry is a JSON header (whatever the caller needs to check the entry is
still valid, and to use it) and, optionally, data (a built bundle's zip).
This module only stores and returns entries; deciding whether an entry is
still valid is the caller's business (:mod:`.bundling` stats the files an
entry lists, :mod:`.pins` compares the environment's identity).

Contracts:

* Where: ``$XDG_CACHE_HOME/turbolift/caller-bundles`` (default
  ``~/.cache/turbolift/caller-bundles``; not ``.../bundles``, which is a
  local worker's store), created 0700. ``TURBOLIFT_BUNDLE_CACHE`` set to
  ``0`` (or ``off``, ``false``, ``no``) switches the cache off; set to an
  absolute path, it names the directory.
* Only this user's: what an entry holds is shipped and run, so only this
  user may be able to write it. The directory is opened once per operation
  (without following a link) and checked on that descriptor: a directory of
  this user's that no one else can write is used as it is; any other (one
  others can write, such as a 0777 shared folder, or another user's) gets a
  private directory ``turbolift-<uid>`` (0700) inside it, checked the same
  way, and is not used at all when that cannot be made. Every file
  operation is then relative to that descriptor, so renaming directories
  meanwhile changes nothing; and an entry is only read if it is a regular
  file (not a link) of this user's that no one else can write. Nothing is
  ever written outside that directory.
* Damage is a miss: :func:`load` returns None for a missing, unreadable,
  truncated or garbled entry (the header and the data are each checked
  against the sha256 recorded with them). An entry written by this user is
  trusted as far as those digests go: the cache does not re-read the files
  a bundle was built from (that is what it spares).
* Never raises: :func:`load` and :func:`store` catch every error (store
  then returns False), so a call never fails because of the cache.
* Atomic: an entry is written to a temporary file in the same directory and
  renamed over the old one, so a concurrent reader sees the old entry or the
  new one, never half of one.
* Bounded: after each store, the least recently used entries beyond
  :data:`MAX_BYTES` (mainly) or :data:`MAX_ENTRIES` are removed (a hit
  refreshes an entry's mtime), and temporary files a crashed writer left are
  swept.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
import time
from typing import Iterator, Optional

MAX_ENTRIES = 4096
MAX_BYTES = 512 * 1024 * 1024
MAGIC = b"turbolift-bundle-cache 2\n"
_SUFFIX = ".entry"
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_SECONDS = 3600.0
_OFF = {"0", "off", "false", "no"}
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC
# Everything is done relative to a directory descriptor; without that (or users), no cache.
_SUPPORTED = (hasattr(os, "getuid") and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
              and {os.open, os.mkdir, os.unlink, os.rename} <= os.supports_dir_fd   # (os.replace too)
              and os.scandir in os.supports_fd and os.utime in os.supports_fd)


def configured_path() -> Optional[str]:
    """The configured cache directory, or None when the cache is switched off."""
    setting = os.environ.get("TURBOLIFT_BUNDLE_CACHE", "").strip()
    if setting.lower() in _OFF:
        return None
    if setting and os.path.isabs(setting):
        return setting
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):   # the XDG spec: a relative value is to be ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "turbolift", "caller-bundles")


def _is_private(info: os.stat_result, kind=stat.S_ISDIR) -> bool:
    """True for a file of ``kind`` owned by this user that no one else can write."""
    return kind(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & _WRITABLE_BY_OTHERS


def _open_private(path: str) -> Optional[int]:
    """A descriptor of the directory to keep entries in (see the module's contract), or None."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(path, _DIRECTORY_FLAGS)
    try:
        if _is_private(os.fstat(fd)):
            result, fd = fd, -1   # (kept open: the caller's)
            return result
        name = f"turbolift-{os.getuid()}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=fd)
        sub = os.open(name, _DIRECTORY_FLAGS, dir_fd=fd)
        if _is_private(os.fstat(sub)):
            return sub
        os.close(sub)
        return None
    finally:
        if fd >= 0:
            os.close(fd)


@contextlib.contextmanager
def opened() -> Iterator[Optional[int]]:
    """The cache directory, open (a descriptor), or None when the cache is off or unusable."""
    path = configured_path()
    fd = None
    if path is not None and _SUPPORTED:
        try:
            fd = _open_private(path)
        except OSError:
            fd = None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def entry_name(key: str) -> str:
    """The file name, in the cache directory, of the entry stored under ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()[:40] + _SUFFIX


def _encode(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _read_entry(root: int, key: str) -> Optional[tuple[dict, Optional[bytes]]]:
    fd = os.open(entry_name(key), _READ_FLAGS, dir_fd=root)
    with os.fdopen(fd, "rb") as handle:
        if not _is_private(os.fstat(fd), stat.S_ISREG):
            return None   # not written by this user alone: shipped code must not come from it
        blob = handle.read()
        if not blob.startswith(MAGIC):
            return None
        digest_end = blob.index(b"\n", len(MAGIC))
        end = blob.index(b"\n", digest_end + 1)
        encoded = blob[digest_end + 1:end]
        if hashlib.sha256(encoded).hexdigest().encode() != blob[len(MAGIC):digest_end]:
            return None
        header = json.loads(encoded)
        if not isinstance(header, dict) or header.get("key") != key:
            return None
        data: Optional[bytes] = blob[end + 1:]
        expected = header.get("data_sha256")
        if expected is None:
            data = None
        elif len(data) != header.get("data_size") or hashlib.sha256(data).hexdigest() != expected:
            return None
        os.utime(fd)   # recently used: kept longest
        return header, data


def load(key: str) -> Optional[tuple[dict, Optional[bytes]]]:
    """``(header, data)`` of the entry stored under ``key``, or None (never raises)."""
    try:
        with opened() as root:
            return None if root is None else _read_entry(root, key)
    except Exception:
        return None


def _write_temporary(root: int, blob: bytes) -> str:
    for _ in range(8):
        name = _TEMP_PREFIX + secrets.token_hex(8)
        try:
            fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=root)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=root)
            raise
        return name
    raise FileExistsError("no free temporary name")


def store(key: str, header: dict, data: Optional[bytes] = None) -> bool:
    """Store ``header`` (JSON-able) and ``data`` under ``key``, atomically; False if it could not be."""
    header = dict(header, key=key)
    if data is not None:
        header["data_sha256"] = hashlib.sha256(data).hexdigest()
        header["data_size"] = len(data)
    try:
        encoded = _encode(header)
        blob = MAGIC + hashlib.sha256(encoded).hexdigest().encode() + b"\n" + encoded + b"\n" + (data or b"")
        with opened() as root:
            if root is None:
                return False
            temp = _write_temporary(root, blob)
            try:
                os.replace(temp, entry_name(key), src_dir_fd=root, dst_dir_fd=root)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=root)
                raise
            prune(root)
            return True
    except Exception:
        return False


def prune(root: int) -> None:
    """Remove (in directory ``root``, a descriptor) the least recently used entries beyond the
    bounds, and stale temporary files."""
    now = time.time()
    entries = []
    try:
        listing = list(os.scandir(root))
    except OSError:
        return
    for each in listing:
        try:
            info = each.stat(follow_symlinks=False)
            if each.name.startswith(_TEMP_PREFIX):
                if now - info.st_mtime > _STALE_TEMP_SECONDS:
                    os.unlink(each.name, dir_fd=root)
            elif each.name.endswith(_SUFFIX):
                entries.append((info.st_mtime_ns, info.st_size, each.name))
        except OSError:
            continue
    entries.sort(reverse=True)
    total = 0
    for index, (_, size, name) in enumerate(entries):
        total += size
        if index >= MAX_ENTRIES or total > MAX_BYTES:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=root)
