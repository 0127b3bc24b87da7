"""Bundles: what a worker needs to run a marked function.

A bundle is a deterministic zip holding the function's module and the
project modules it imports (found by reading their ``import`` statements),
plus ``__turbolift__/manifest.json``: the caller's Python version and the
exact versions of the third-party distributions the shipped code imports.
Functions that cannot be imported on a worker (those of ``__main__`` and
closures) travel serialised by value inside the bundle. Beside each source
travels the caller's bytecode of it, when it has some a worker can trust
(:mod:`.bytecode`). The bundle id is the sha256 of the zip, so identical
code in the same place yields the identical id on every run and a worker's
cache can be reused across runs.

Building a big project's bundle costs a program a noticeable part of its
first call, so a module's bundle is kept in the caller's bundle cache
(:mod:`.bundle_cache`, :mod:`.bundle_entries`) with what its build depended
on, and reused while that holds: a hit is byte-identical to a build.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .._wire import serialize
from .._wire.bundle_format import BYTECODE, FORMAT, MANIFEST, MAX_FILES, pack_bytecode, python_tag
from .._wire.by_value import travels_by_value
from ..errors import BundleError
from . import bundle_cache, bundle_entries, package_data
from .bytecode import shipped_pyc
from .import_scan import import_records, imported_names
from .pins import pinned_requirements
from .projects import is_project_file, is_stdlib, locate
from .watched_globals import watched_globals

DEFAULT_SIZE_LIMIT = int(os.environ.get("TURBOLIFT_BUNDLE_LIMIT", 100 * 1024 * 1024))
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Bundle:
    id: str                                   # "sha256:<hex>"
    data: bytes                               # the zip archive
    manifest: dict = field(repr=False)
    files: tuple = field(repr=False)          # ((archive name, size), ...)


@dataclass(frozen=True)
class Target:
    """A function as a worker addresses it.

    ``watched`` holds, for a function shipped by value, the globals it reads
    as they were when it was serialised: ``(namespace, name, value)``.
    """
    bundle: Bundle
    module: str
    qualname: str
    watched: tuple = ()

    def is_current(self) -> bool:
        """False once a global the function reads has been rebound since it was shipped."""
        for namespace, name, value in self.watched:
            if namespace.get(name, _ABSENT) is not value:
                return False
        return True


_ABSENT = object()


# -- finding the project modules a module imports -------------------------

def _archive_name(name: str, is_package: bool) -> str:
    return name.replace(".", "/") + ("/__init__.py" if is_package else ".py")


_records_seen: dict[str, tuple] = {}   # local path -> (identity, import records), parsed in this process


class WouldParse(Exception):
    """A build for the preload met a file whose import records it does not know (none in the bundle cache
    or from this process): it leaves parsing to the threads that call. CPython 3.11 keeps the AST
    constructor's recursion depth per interpreter, so a parse in a background thread could make one that
    the program runs meanwhile fail (``SystemError: AST constructor recursion depth mismatch``)."""


RACY_NS = 2_000_000_000


def _identity(path: str) -> Optional[list]:
    """What tells a file's content changed without reading it: size, mtime, ctime, inode, device.

    None for a file modified or changed (its mtime or its ctime) in the last
    RACY_NS (or in the future): file times advance by clock ticks (or
    seconds), so a rewrite of the same size right after this one (its mtime
    set back, as rsync -t does) could leave every field as it is. Such a
    file is never trusted unread ("racy git").
    """
    info = os.stat(path)
    if time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) < RACY_NS:
        return None
    return bundle_entries.identity_of(info)


class _Collector:
    """Walks imports from some roots; gathers project files and pins.

    It also keeps what the walk depended on, for the bundle cache: every
    file it read (with its identity, taken before reading, and its import
    records) and the answer to every module lookup. ``known`` holds import
    records of an earlier walk (path -> (identity, records)), reused, as are
    those this process parsed, for a file whose identity is unchanged
    instead of parsing it again.
    """

    def __init__(self, known: Optional[dict] = None, parse: bool = True) -> None:
        self.files: dict[str, str] = {}        # archive name -> local path
        self.modules: dict[str, str] = {}      # module name -> archive name
        self.third_party: set[str] = set()     # top-level import names
        self.read: dict[str, list] = {}        # local path -> [identity, import records]
        self.contents: dict[str, bytes] = {}   # local path -> the bytes read (and shipped)
        self.lookups: dict[str, Optional[tuple]] = {}   # name -> (origin, is_package, is project code)
        self._known = known or {}
        self._parse = parse   # False: a file whose records are not known raises WouldParse

    def locate(self, name: str) -> Optional[tuple]:
        """``(origin, is_package, is_project_file(origin))`` of module ``name``, or None (remembered)."""
        if name not in self.lookups:
            located = locate(name)
            self.lookups[name] = None if located is None else (*located, is_project_file(located[0]))
        return self.lookups[name]

    def add_module(self, name: str, path: str, is_package: bool) -> None:
        if name in self.modules:
            return
        arcname = _archive_name(name, is_package)
        self.modules[name] = arcname
        self.files[arcname] = path
        if is_package:   # what its code reads beside itself travels with it
            data, read = package_data.collect(name, path, _identity)
            self.files.update(data)
            self.read.update(read)
        parent = name.rpartition(".")[0]
        if parent:  # a package's __init__ runs before its submodules
            located = self.locate(parent)
            if located and located[2]:
                self.add_module(parent, located[0], located[1])
        self.scan(path, name, is_package)

    def scan(self, path: str, name: str, is_package: bool) -> None:
        try:
            identity = _identity(path)   # before reading: a later edit then shows as a change
            with open(path, "rb") as handle:
                data = handle.read()
            known = self._known.get(path) or _records_seen.get(path)
            if identity is not None and known is not None and known[0] == identity:
                records = known[1]
            elif not self._parse:
                raise WouldParse(path)
            else:
                records = import_records(data.decode("utf-8"))
                if identity is not None:
                    _records_seen[path] = (identity, records)
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"cannot read {path} to bundle it: {exc}") from exc
        self.read[path] = [identity, records]
        self.contents[path] = data
        for imported in sorted(imported_names(records, name, is_package)):
            if imported in self.modules:
                continue
            top = imported.partition(".")[0]
            if top == "turbolift" or is_stdlib(top):
                continue
            located = self.locate(imported)
            if located is None:
                continue
            if located[2]:
                self.add_module(imported, located[0], located[1])
            else:
                self.third_party.add(top)


# -- packing ---------------------------------------------------------------

def _pack(entries: dict[str, bytes], limit: int) -> bytes:
    total = sum(len(v) for v in entries.values())
    if total > limit:
        largest = sorted(entries.items(), key=lambda kv: -len(kv[1]))[:5]
        listing = ", ".join(f"{name} ({len(data):,} bytes)" for name, data in largest)
        raise BundleError(
            f"bundle of {total:,} bytes exceeds the limit of {limit:,} bytes; largest files: "
            f"{listing}. Move data out of the imported packages (their data files travel with them) or "
            "raise TURBOLIFT_BUNDLE_LIMIT.")
    if len(entries) > MAX_FILES:
        raise BundleError(f"bundle of {len(entries):,} files exceeds the limit of {MAX_FILES:,}: move data "
                          "files out of the imported packages (they travel with them)")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    return buffer.getvalue()


def build(collector: _Collector, extra: dict[str, bytes], manifest_extra: dict,
          limit: int = DEFAULT_SIZE_LIMIT) -> Bundle:
    entries: dict[str, bytes] = dict(extra)
    compiled: dict[str, bytes] = {}
    for arcname, path in collector.files.items():
        data = collector.contents.get(path)
        identity = collector.read[path][0] if data is not None else None
        if data is None:
            with open(path, "rb") as handle:
                data = handle.read()
        entries[arcname] = data
        pyc = shipped_pyc(path, data, identity) if arcname.endswith(".py") else None
        if pyc is not None:
            compiled[arcname] = pyc
    manifest = {"format": FORMAT, **python_tag(),
                "modules": dict(sorted(collector.modules.items())),
                "requirements": pinned_requirements(collector.third_party),
                **manifest_extra}
    entries[MANIFEST] = json.dumps(manifest, sort_keys=True, indent=1).encode()
    if compiled:
        bytecode = pack_bytecode(compiled)
        # The bytecode only spares a worker compiling: never what makes a bundle too big.
        if sum(map(len, entries.values())) + len(bytecode) <= limit and len(entries) < MAX_FILES:
            entries[BYTECODE] = bytecode
    data = _pack(entries, limit)
    files = tuple(sorted((name, len(blob)) for name, blob in entries.items()))
    return Bundle("sha256:" + hashlib.sha256(data).hexdigest(), data, manifest, files)


_module_bundles: dict[str, Bundle] = {}
_module_lock = threading.Lock()


def _by_value_key(fn: Callable) -> str:
    return fn.__qualname__.replace("<", "_").replace(">", "_")


def target_for(function: Any) -> Target:
    """The bundle and address of a marked function (``TurboliftFunction``).

    Functions of importable modules share one bundle per module; functions
    of ``__main__`` and closures are serialised by value into a bundle of
    their own, so the script's top-level code never runs on a worker.
    """
    fn = function.__wrapped__
    # The marked function's own name: where a worker finds it (for a bound
    # method or callable instance named with --remote, the name it was given).
    module_name = function.__module__ or "__main__"
    qualname = function.__qualname__
    if travels_by_value(module_name, qualname):
        return _by_value_target(function, fn, module_name)
    return Target(module_bundle(module_name), module_name, qualname)


def module_bundle(module_name: str) -> Bundle:
    """The bundle of an importable module (its project modules, or the pin of an installed one), made once."""
    with _module_lock:
        bundle = _module_bundles.get(module_name)
        if bundle is None:
            bundle = _module_bundles[module_name] = _module_bundle(module_name)
        return bundle


def module_bundle_ahead(module_name: str) -> Optional[Bundle]:
    """The bundle :func:`module_bundle` would make now, for the preload: made without its lock (a build may
    wait for an import that another thread runs, which may need ``module_bundle`` meanwhile) and not kept
    (later imports can change what a call ships). None when a file would need parsing (WouldParse)."""
    bundle = _module_bundles.get(module_name)
    try:
        return bundle if bundle is not None else _module_bundle(module_name, parse=False)
    except WouldParse:
        return None


def needs_shipping(module_name: str) -> bool:
    """True for a module of the user's project (a worker imports it from a bundle, not its own site)."""
    top = module_name.partition(".")[0]
    if top in ("turbolift", "builtins", "__main__") or is_stdlib(top):
        return False
    located = locate(module_name)
    return bool(located and is_project_file(located[0]))


def _module_bundle(module_name: str, parse: bool = True) -> Bundle:
    """Build the bundle of ``module_name``, or take it from the bundle cache when it still holds.

    The cache never makes a build fail: an entry that cannot be used (or a
    key that cannot be computed) is a miss, a build that used an entry's
    import records and failed with anything but BundleError is done again
    without them, and a failure to store is ignored. A BundleError is the
    build's own (a file that cannot be read, a bundle over the limit).
    """
    try:
        key: Optional[str] = bundle_entries.bundle_key("module", module_name, DEFAULT_SIZE_LIMIT)
    except Exception:   # (a working directory that is gone, say): no cache this time
        key = None
    entry = bundle_cache.load(key) if key is not None else None
    known = None
    if entry is not None:
        header, data = entry
        try:
            if bundle_entries.still_valid(header, data):
                assert data is not None
                files = tuple(tuple(f) for f in header["files"])
                return Bundle(header["id"], data, header["manifest"], files)
        except Exception:   # an entry of an unexpected shape: build afresh
            pass
        known = bundle_entries.known_records(header)
    try:
        collector, bundle = _walk_and_build(module_name, known, parse)
    except (BundleError, WouldParse):
        raise
    except Exception:
        if not known:
            raise
        collector, bundle = _walk_and_build(module_name, None, parse)   # the entry's records were bad
    if key is not None:
        try:
            bundle_cache.store(key, bundle_entries.header_of(collector, bundle), bundle.data)
        except Exception:
            pass
    return bundle


def _walk_and_build(module_name: str, known: Optional[dict], parse: bool = True) -> tuple[_Collector, Bundle]:
    """The walk from ``module_name`` (reusing the import records ``known``) and the bundle it gives."""
    collector = _Collector(known, parse)
    located = collector.locate(module_name)
    installed: list[str] = []
    if located and located[2]:
        collector.add_module(module_name, located[0], located[1])
    else:
        # An installed library: the worker imports its own copy, pinned.
        collector.third_party.add(module_name.partition(".")[0])
        installed.append(module_name)
    return collector, build(collector, {}, {"installed": installed, "pickled": {}})


def bundle_for_module(module_name: str) -> Bundle:
    """Import ``module_name`` (locally) and build the bundle workers would receive."""
    importlib.import_module(module_name)
    return _module_bundle(module_name)


def bundle_for_script(path: str) -> Bundle:
    """The project modules a script imports, as shipped with its functions.

    The script is read, not run; its marked functions, which travel
    serialised inside the real bundle, are therefore not listed.
    """
    collector = _Collector()
    collector.scan(path, "__main__", False)
    with open(path, "rb") as handle:
        source = handle.read()
    return build(collector, {"__turbolift__/source/" + os.path.basename(path): source},
                 {"installed": [], "pickled": {}})


def describe(bundle: Bundle) -> dict:
    """A report of what ``bundle`` ships, for ``turbolift bundle``."""
    return {"id": bundle.id, "size": len(bundle.data), "python": bundle.manifest["python"],
            "implementation": bundle.manifest["implementation"], "files": list(bundle.files),
            "requirements": bundle.manifest["requirements"]}


def _by_value_target(function: Any, fn: Callable, module_name: str) -> Target:
    collector = _Collector()
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    extra: dict[str, bytes] = {}
    scripts: dict[str, str] = {}
    if path and path.endswith(".py") and os.path.exists(path):
        # The module's imports are shipped; the module itself is not run.
        spec = getattr(module, "__spec__", None)
        is_package = bool(spec and spec.submodule_search_locations is not None)
        if module_name != "__main__" and is_project_file(path):
            collector.add_module(module_name, path, is_package)
        else:
            collector.scan(path, module_name if module_name != "__main__" else "__main__", False)
            with open(path, "rb") as handle:  # for readable remote tracebacks
                arc = "__turbolift__/source/" + os.path.basename(path)
                extra[arc] = handle.read()
                # Keyed as the code objects name the file, which may be relative.
                scripts[getattr(getattr(fn, "__code__", None), "co_filename", path)] = arc
                scripts[os.path.abspath(path)] = arc
    key = _by_value_key(fn)
    pickled_name = f"__turbolift__/functions/{key}.pkl"
    extra[pickled_name] = serialize.dumps(function, for_worker=True)
    bundle = build(collector, extra, {"installed": [], "pickled": {key: pickled_name},
                                      "sources": scripts})
    # A function shipped by value carries its globals' values of this moment (and those of the
    # helpers and classes travelling with it): watch them, so that rebinding one ships it anew.
    watched = watched_globals(fn)
    return Target(bundle, module_name, key, watched)
