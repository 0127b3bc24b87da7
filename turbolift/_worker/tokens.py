"""Which token a hand-started worker requires, and the token file it writes for its own user.

A worker runs whatever its callers send, so by default it requires a
token. One given with ``--token-file`` is used (an empty or unreadable file
is an error). Without one, the worker makes a random token and writes it,
readable by its user only, to a file named after its address (see
:func:`turbolift._wire.auth.token_file_for`), which callers of the same
user read on their own: other local users cannot call it. No token is
required only on a unix socket inside a directory only this user can
enter (the file system keeps everyone else out: local clusters do this),
or with the explicit ``--allow-any-local-user`` on loopback.
"""
from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Optional

from .._wire.auth import token_file_for


def private_unix_socket(listen: str) -> bool:
    """True for ``unix:PATH`` whose directory is this user's and closed to everyone else."""
    if not listen.startswith("unix:"):
        return False
    directory = os.path.dirname(os.path.abspath(listen[5:].lstrip("/") and listen[5:]))
    try:
        info = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write(path: Path, token: str) -> Path:
    """Write ``token`` to ``path`` (mode 0600, in a 0700 directory), replacing it atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".token-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path


def publish(address: str, token: str) -> Path:
    """Write the token a worker made for the callers of its own user; return where."""
    return write(token_file_for(address), token)


def remove(path: Optional[Path]) -> None:
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


def announce(path: Path) -> str:
    """What the worker says about a token it made."""
    return (f"turbolift worker: callers must present this worker's token. Callers run by this user find it "
            f"in {path}; give other callers a copy of that file (--token-file FILE).")
