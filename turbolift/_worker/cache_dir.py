"""The directory a worker keeps its bundles in: only its own user may write there.

What is in the cache gets imported and run, so nobody else may be able to
put anything there. A cache root that belongs to this user and that no one
else can write is used as it is. A root that others can write, such as the
volumes Kubernetes mounts (an ``emptyDir`` is 0777, or 2775 with an
``fsGroup``), gets a private directory of this user's inside it
(``turbolift-<uid>``, mode 0700): others cannot enter it, nor rename it
(that needs write permission on the directory itself), nor remove it once
it holds anything. A root that belongs to another user and that this user
cannot write to is refused. The private directory is checked again before
each bundle is loaded (:func:`verify`).
"""
from __future__ import annotations

import os
import stat

from ..errors import ConfigurationError

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def prepare(root: str) -> str:
    """The directory to keep bundles in, under ``root``, made if needed; ConfigurationError if unsafe."""
    uid = os.getuid()
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        info = os.stat(root)
    except OSError as exc:
        raise ConfigurationError(f"cannot use the bundle cache {root}: {exc.strerror}. Give another "
                                 "--cache-dir (or TURBOLIFT_CACHE_DIR)") from None
    if info.st_uid == uid and not info.st_mode & _WRITABLE_BY_OTHERS:
        return root
    if not info.st_mode & _WRITABLE_BY_OTHERS:
        raise ConfigurationError(
            f"refusing the bundle cache {root}: it belongs to another user (uid {info.st_uid}), who could "
            "plant code this worker would run. Use a directory of this user's (--cache-dir or "
            "TURBOLIFT_CACHE_DIR).")
    private = os.path.join(root, f"turbolift-{uid}")
    try:
        os.mkdir(private, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigurationError(f"cannot make a private bundle cache in {root}: {exc.strerror}. Give a "
                                 "directory of this user's (--cache-dir)") from None
    verify(private)
    return private


def verify(directory: str) -> None:
    """Raise ConfigurationError unless ``directory`` is a real directory of this user's that only
    this user can write (checked without following a link)."""
    try:
        info = os.lstat(directory)
    except OSError as exc:
        raise ConfigurationError(f"the bundle cache {directory} is gone: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"refusing the bundle cache {directory}: it is not a directory (a link?)")
    if info.st_uid != os.getuid():
        raise ConfigurationError(f"refusing the bundle cache {directory}: it belongs to uid {info.st_uid}, "
                                 "not to this worker's user, who could plant code in it")
    if info.st_mode & _WRITABLE_BY_OTHERS:
        raise ConfigurationError(
            f"refusing the bundle cache {directory}: it is writable by other users, who could plant code "
            f"this worker would run. Use a directory only this user can write (chmod go-w {directory}), "
            "or another --cache-dir.")
