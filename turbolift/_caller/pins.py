"""The installed distributions' versions that a bundle pins, found cheaply.

``importlib_metadata.packages_distributions()`` reads the metadata of every
installed distribution (a second, in a large environment) and importing
``importlib_metadata`` alone costs a tenth of one. Its answer, and the
versions asked for, are therefore kept in the bundle cache under the
*identity of the environment*: for every ``str`` entry of ``sys.path`` in
order, the names and mtimes of the distribution metadata folders
(``*.dist-info``, ``*.egg-info``, ``*.egg``) it holds with the size, mtime
and ctime of the metadata file inside each (``METADATA``, ``PKG-INFO``,
``EGG-INFO/PKG-INFO``), or a zip's size and mtime. Installing, removing or
upgrading a distribution adds, removes or renames such a folder, and
rewriting its metadata in place (as setuptools does to an ``*.egg-info``,
whose name carries no version) changes the metadata file's times, so the
identity changes and the answer is computed afresh; editing a project's own
files leaves it alone.

Only the top-level names bundles asked for are looked up (:func:`_providers`),
not every distribution's: in an environment of 118 distributions the first
lookup costs a few tens of milliseconds instead of the third of a second
``packages_distributions()`` takes, most of it spent reading every RECORD.

Contract: :func:`pinned_requirements` returns what it would return computed
from ``importlib_metadata`` now (``packages_distributions()`` and
``version()``), for a fraction of the cost when the environment is
unchanged. Not noticed: a change to another metadata file (``top_level.txt``, ``RECORD``) that leaves
the folder and its metadata file untouched, with their times set back.
Metadata changed in the last two seconds is not trusted: nothing is kept
then. Nor is anything kept when the identity cannot be computed (a deleted
working directory, say): the answer is computed directly, never an error
because of the cache.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import threading
import time
from typing import Any, Optional

from . import bundle_cache

# metadata folder suffix -> the file in it that holds the version
_METADATA_FILES = {".dist-info": "METADATA", ".egg-info": "PKG-INFO",
                   ".egg": os.path.join("EGG-INFO", "PKG-INFO")}
_METADATA_SUFFIXES = tuple(_METADATA_FILES)
RACY_NS = 2_000_000_000   # metadata changed this recently (ns) is not trusted
_lock = threading.Lock()
_KEY = "pins 2:"   # (entries of "pins:" held every name's answer, and no answer for names no one provides)
_memo: dict = {}   # environment identity -> {"packages": ..., "versions": ...}, for this process


def _times(path: str) -> Optional[list]:
    """``[size, mtime_ns, ctime_ns]`` of ``path`` (following links), or None when it cannot be stat'ed."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _folder_identity(path: str, name: str) -> list:
    """``[name, mtime_ns, [size, mtime, ctime] of its metadata file]`` of a metadata folder (or file)."""
    folder = _times(os.path.join(path, name))
    suffix = name[name.rindex("."):]
    inside = _times(os.path.join(path, name, _METADATA_FILES[suffix]))
    return [name, None if folder is None else folder[1], inside]


def _entry_identity(entry: str) -> list:
    path = entry or os.getcwd()
    try:
        names = os.listdir(path)
    except NotADirectoryError:
        info = _times(path)
        return [entry, path, None] if info is None else [entry, path, "file", info[0], info[1]]
    except OSError:
        return [entry, path, None]
    found = [_folder_identity(path, name) for name in sorted(names) if name.endswith(_METADATA_SUFFIXES)]
    return [entry, path, found]


def _is_recent(folder: list, recent: int) -> bool:
    """True when a metadata folder (or the file in it) is missing or changed after ``recent``."""
    _, mtime, inside = folder
    if mtime is None or mtime > recent:
        return True
    return inside is not None and max(inside[1], inside[2]) > recent


def environment_identity() -> Optional[str]:
    """A digest of the distribution metadata visible on ``sys.path`` now (cheap: listings and stats).

    None while some metadata changed in the last two seconds (an install
    under way: file times advance by ticks, so the digest could miss what
    follows), when nothing is kept; None too when it cannot be computed
    (never raises).
    """
    try:
        entries = [_entry_identity(entry) for entry in sys.path if isinstance(entry, str)]
        recent = time.time_ns() - RACY_NS
        for each in entries:
            if isinstance(each[2], list) and any(_is_recent(folder, recent) for folder in each[2]):
                return None
        identity = [sys.version, sys.executable, entries]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    except Exception:
        return None


def _is_answer(packages: object, versions: object) -> bool:
    """True for the shape of the answers :func:`_known` keeps (cached entries are checked)."""
    return (isinstance(packages, dict) and isinstance(versions, dict)
            and all(isinstance(top, str) and isinstance(dists, list)
                    and all(isinstance(dist, str) for dist in dists) for top, dists in packages.items())
            and all(isinstance(version, str) or version is None for version in versions.values()))


def _inferred(dist: Any, names: set, importlib_metadata: Any) -> list:
    """Those of ``names`` that ``importlib_metadata``'s ``_top_level_inferred(dist)`` gives, for a
    distribution with a RECORD: its lines are read as ``dist.files`` reads them, but only a path
    that could name one of ``names`` is made a path and looked for (``files`` drops missing ones)."""
    found = []
    for row in csv.reader(dist.read_text("RECORD").splitlines()):
        if not 0 < len(row) <= 3:
            raise ValueError("a RECORD row the library reads otherwise")   # (it answers, then)
        if not any(name in row[0] for name in names):
            continue   # (what a path gives is a part of it)
        path = importlib_metadata.PackagePath(row[0])
        top = importlib_metadata._get_toplevel_name(path)
        if top in names and top not in found and "." not in top and dist.locate_file(path).exists():
            found.append(top)
    return found


def _providers(names: set) -> dict:
    """``{name: packages_distributions().get(name, [])}`` for ``names``, looked up for these only.

    The same walk as ``importlib_metadata.packages_distributions()`` (its
    distributions in order, ``top_level.txt`` if it names any, else the
    names inferred from the files), but a distribution's name is read only
    when it provides one of ``names``, and files only where they could.
    Where the library's reading could differ (a distribution of another
    kind, a file list other than RECORD, anything unexpected) its own
    function answers.
    """
    import importlib_metadata

    found: dict = {name: [] for name in names}
    try:
        toplevel_name = importlib_metadata._get_toplevel_name   # (the library's, or the full walk below)
        for dist in importlib_metadata.distributions():
            declared = (dist.read_text("top_level.txt") or "").split()
            if declared:
                provided = [name for name in declared if name in found]
            elif type(dist) is importlib_metadata.PathDistribution and dist.read_text("RECORD"):
                provided = _inferred(dist, names, importlib_metadata)
            else:
                provided = [name for name in set(map(toplevel_name, dist.files or ()))
                            if name in found and "." not in name]   # (the library's importable_name)
            for name in provided:
                found[name].append(dist.metadata["Name"])
        return found
    except Exception:
        everything = importlib_metadata.packages_distributions()
        return {name: list(everything.get(name, [])) for name in names}


def _known(identity: Optional[str]) -> dict:
    """The cached answers for ``identity``: from this process, the disk, or empty (filled as asked)."""
    known = _memo.get(identity) if identity is not None else None
    if known is not None:
        return known
    entry = bundle_cache.load(_KEY + identity) if identity is not None else None
    if entry is not None and _is_answer(entry[0].get("packages"), entry[0].get("versions")):
        known = {"packages": entry[0]["packages"], "versions": entry[0]["versions"]}
    else:
        known = {"packages": {}, "versions": {}}
    if identity is not None:
        _memo[identity] = known
    return known


def _packages(known: dict, names: list) -> None:
    """Look up the distributions providing those of ``names`` that ``known`` was not asked for yet."""
    missing = {name for name in names if name not in known["packages"]}
    if missing:
        known["packages"].update(_providers(missing))
        known["new"] = True


def _save(identity: Optional[str], known: dict) -> None:
    if identity is not None:
        bundle_cache.store(_KEY + identity, {"packages": known["packages"], "versions": known["versions"]})


def _versions(known: dict, identity: Optional[str], dists: list) -> dict:
    """The versions of ``dists`` (None: not found), asking ``importlib_metadata`` for new ones only."""
    versions = known["versions"]
    missing = [dist for dist in dists if dist not in versions]
    if missing:
        import importlib_metadata

        for dist in missing:
            try:
                versions[dist] = importlib_metadata.version(dist)
            except importlib_metadata.PackageNotFoundError:
                versions[dist] = None
        known["new"] = True
    if known.pop("new", False):   # (stored once, with the versions)
        _save(identity, known)
    return {dist: versions[dist] for dist in dists}


def pinned_requirements(top_level_names: set[str]) -> dict[str, str]:
    """Map the distributions providing ``top_level_names`` to their versions."""
    if not top_level_names:
        return {}
    with _lock:
        identity = environment_identity()
        known = _known(identity)
        _packages(known, sorted(top_level_names))
        wanted = [(top, dist) for top in sorted(top_level_names) for dist in known["packages"].get(top, [])]
        versions = _versions(known, identity, sorted({dist for _, dist in wanted}))
        pins: dict[str, str] = {}
        for _, dist in wanted:
            if versions[dist] is not None:
                pins[dist] = versions[dist]
        return pins
