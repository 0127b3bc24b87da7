"""The worker's side of bundles: a content-addressed on-disk cache.

Bundles arrive as bytes, are checked against their sha256 id, unpacked
safely, checked against this interpreter (the manifest), and their modules
imported with marking disabled so the real functions run. Several workers
may share one cache directory: every write goes to a private temporary
name first and is published with an atomic rename.
"""
from __future__ import annotations

import errno
import hashlib
import importlib
import inspect
import linecache
import os
import shutil
import sys
import tempfile
import threading
import tokenize
from typing import Any, Callable, Iterable, Optional

from .._marker import TurboliftFunction
from .._wire import serialize
from .._wire.bundle_format import BUNDLE_ID
from ..errors import BundleError
from . import archives, cache_dir, requirements, shipped_bytecode


def check_id(bundle_id: str) -> str:
    """Return the hex digest of a well-formed bundle id, else raise BundleError."""
    if not BUNDLE_ID.fullmatch(bundle_id):
        raise BundleError(f"malformed bundle id {bundle_id[:80]!r}; expected 'sha256:' and 64 hex digits")
    return bundle_id[7:]


def _file_digest(path: str) -> str:
    """The sha256 hex digest of a file, read in blocks; "" when it cannot be read."""
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    except OSError:
        return ""
    return hasher.hexdigest()


def _attribute(module: Any, qualname: str) -> Any:
    """``module.qualname`` as the caller named it: a class's static and class methods as the plain
    functions they hold (the caller passes the class itself when it calls a class method), any
    other name as ``getattr`` finds it (a bound method of a module-level instance stays bound)."""
    *path, leaf = qualname.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    if isinstance(owner, type):
        raw = inspect.getattr_static(owner, leaf)
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        return raw
    return getattr(owner, leaf)


class LoadedBundle:
    """An unpacked, verified bundle whose functions can be resolved."""

    def __init__(self, store: "BundleStore", bundle_id: str, path: str, manifest: dict,
                 environment: Optional[str] = None) -> None:
        self._store = store
        self.id = bundle_id
        self.path = path
        self.manifest = manifest
        # Where this bundle's code comes from: its own files, then the pinned
        # requirements pip installed for it (if the worker had to).
        self.paths = (path,) + ((environment,) if environment else ())
        self.shadowed = requirements.top_level_names(environment) if environment else set()
        self.module_names = tuple(manifest.get("modules", {}))
        # What each shipped module contains: bundles whose copies of a module
        # are identical can share one module object, and need no swapping.
        self.digests = {name: _file_digest(os.path.join(path, arcname))
                        for name, arcname in manifest.get("modules", {}).items()}
        # Managed by the store: this bundle's versions of modules while another
        # version is in sys.modules, and the store generation it was made active in.
        self.parked: dict[str, Any] = {}
        self.active_generation = -1
        self._functions: dict[tuple[str, str], Callable] = {}
        for original, arcname in manifest.get("sources", {}).items():
            self._register_source(original, os.path.join(path, arcname))

    @staticmethod
    def _register_source(original: str, local: str) -> None:
        try:
            with tokenize.open(local) as handle:   # decoded as Python decodes it (its coding cookie)
                lines = handle.read().splitlines(True)
        except (OSError, SyntaxError, UnicodeDecodeError):
            return   # (only for tracebacks: a file that cannot be read as text has no lines to show)
        linecache.cache[original] = (len(lines), None, lines, original)

    def activate(self) -> None:
        """Make this bundle's modules the ones ``import`` finds (cheap if already)."""
        if self.active_generation == self._store.generation:
            return
        self._store.activate(self)

    def loaded(self, module: str, qualname: str) -> Optional[Callable]:
        """The function ``module.qualname`` if :meth:`resolve` found it before, else None."""
        return self._functions.get((module, qualname))

    def resolve(self, module: str, qualname: str) -> Callable:
        """The real function ``module.qualname`` (marking disabled)."""
        key = (module, qualname)
        found = self._functions.get(key)
        if found is not None:
            return found
        with self._store.lock:
            self.activate()
            pickled = self.manifest.get("pickled", {}).get(qualname)
            if pickled:
                with open(os.path.join(self.path, pickled), "rb") as handle:
                    obj = serialize.loads(handle.read())
            else:
                if module not in self.module_names and module not in self.manifest.get("installed", []):
                    raise LookupError(f"module {module!r} is not in bundle {self.id}")
                obj = _attribute(importlib.import_module(module), qualname)
            if isinstance(obj, TurboliftFunction):  # marked: run the function it wraps
                obj = obj.__wrapped__
            if not callable(obj):
                raise LookupError(f"{module}.{qualname} is a {type(obj).__name__}, not a function")
            self._functions[key] = obj
            return obj


class BundleStore:
    """Bundles on disk under ``root``, loaded lazily and kept in memory."""

    def __init__(self, root: str, install_requirements: bool = False) -> None:
        self.cache_root = cache_dir.prepare(root)
        self.root = os.path.join(self.cache_root, "bundles")
        self.install_requirements = install_requirements
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        cache_dir.verify(self.root)
        _remove_leftovers(self.root)
        self.lock = threading.RLock()
        self.generation = 0
        self._loaded: dict[str, LoadedBundle] = {}
        self._parked_base: dict[str, Any] = {}   # the worker's own modules a bundle shadows
        self._in_place: dict[str, str] = {}      # module name -> digest of the version import finds
        self._stored: dict[str, dict] = {}       # digest -> manifest, of archives this process stored

    def _zip_path(self, digest: str) -> str:
        return os.path.join(self.root, digest + ".zip")

    def has(self, bundle_id: str) -> bool:
        if bundle_id in self._loaded:
            return True
        return os.path.exists(self._zip_path(check_id(bundle_id)))

    def ids(self) -> list[str]:
        return [bundle_id for bundle_id, _ in self.sizes()]

    def sizes(self) -> list[tuple[str, int]]:
        """``(bundle id, archive bytes)`` of every bundle in the cache."""
        found = []
        for name in sorted(os.listdir(self.root)):
            if name.endswith(".zip"):
                try:
                    found.append(("sha256:" + name[:-4], os.stat(os.path.join(self.root, name)).st_size))
                except OSError:  # removed meanwhile
                    continue
        return found

    def put(self, bundle_id: str, size: int, chunks: Iterable[bytes]) -> bool:
        """Store a bundle from ``chunks``; False if it was already present.

        The content must hash to ``bundle_id`` and be exactly ``size`` bytes.
        """
        digest = check_id(bundle_id)
        if size > archives.MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle of {size:,} bytes exceeds the worker limit of "
                              f"{archives.MAX_BUNDLE_BYTES:,}")
        if self.has(bundle_id):
            for _ in chunks:  # drain the stream; nothing to store
                pass
            return False
        hasher = hashlib.sha256()
        received = 0
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=f".incoming-{os.getpid()}-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    received += len(chunk)
                    if received > size:
                        raise BundleError(f"bundle {bundle_id} sent more than its declared {size:,} bytes")
                    hasher.update(chunk)
                    handle.write(chunk)
            if received != size:
                raise BundleError(f"bundle {bundle_id} ended after {received:,} of {size:,} bytes")
            if hasher.hexdigest() != digest:
                raise BundleError(f"bundle content does not match its id {bundle_id}; refusing it")
            # Everything a load would check, checked now: what is refused is never stored.
            manifest = archives.check(temp)
            os.replace(temp, self._zip_path(digest))
            self._stored[digest] = manifest   # (its load need not hash and check it again)
        except OSError as exc:
            raise _storage_error(exc, self.root, f"storing bundle {bundle_id}") from None
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return True

    def load(self, bundle_id: str) -> Optional[LoadedBundle]:
        """The loaded bundle, or None when this worker does not hold it."""
        found = self._loaded.get(bundle_id)
        if found is not None:
            return found
        digest = check_id(bundle_id)
        with self.lock:
            found = self._loaded.get(bundle_id)
            if found is not None:
                return found
            archive = self._zip_path(digest)
            if not os.path.exists(archive):
                return None
            manifest = self._stored.pop(digest, None)
            if manifest is None and _file_digest(archive) != digest:  # corrupted (or tampered with) on disk
                os.unlink(archive)
                shutil.rmtree(os.path.join(self.root, digest), ignore_errors=True)
                return None  # the caller uploads it again
            directory = os.path.join(self.root, digest)
            cache_dir.verify(self.root)
            if manifest is None:   # checked again: the cache may hold archives from older workers
                manifest = archives.check(archive)
            if os.path.isdir(directory) and not archives.matches(directory, archive):
                shutil.rmtree(directory, ignore_errors=True)
            if not os.path.isdir(directory):
                staging = tempfile.mkdtemp(dir=self.root, prefix=f".unpack-{os.getpid()}-")
                try:
                    archives.extract(archive, staging)
                    try:
                        os.rename(staging, directory)
                    except OSError:  # another worker published it first
                        pass
                except OSError as exc:
                    raise BundleError(str(_storage_error(exc, self.root, f"unpacking bundle {bundle_id}"))) \
                        from None
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            environment = None
            found = requirements.differences(manifest, sys.path)
            if found and self.install_requirements and all(
                    what not in ("python", "implementation") for what, _, _ in found):
                environment = requirements.ensure_environment(self.cache_root, manifest["requirements"])
                found = requirements.differences(manifest, [environment, *sys.path])
            if found:
                raise requirements.mismatch(found, self.install_requirements)
            try:
                shipped_bytecode.offer(directory)
            except (ValueError, UnicodeDecodeError) as exc:   # (checked at upload: a damaged copy on disk)
                raise BundleError(f"the unpacked bytecode of bundle {bundle_id} is damaged: {exc}") from None
            loaded = LoadedBundle(self, bundle_id, directory, manifest, environment)
            self._loaded[bundle_id] = loaded
            return loaded

    def activate(self, bundle: LoadedBundle) -> None:
        """Make ``bundle``'s modules the ones ``import`` finds.

        Bundles whose copies of a module are identical share it, and their
        directories all stay on ``sys.path``: calls of different functions
        run side by side without swapping anything. Only a module of which
        another bundle holds a *different* version (the caller changed the
        code) is swapped: the other version is parked until its bundle is
        active again. Functions keep the globals of their own version, but
        an import executed lazily while the other version is active sees it.
        """
        with self.lock:
            if not bundle.shadowed and all(self._in_place.get(name, digest) == digest
                                           for name, digest in bundle.digests.items()):
                # Nothing to swap: every module it shares with the bundles in
                # place is the same version. Just make its own modules findable.
                missing = [path for path in bundle.paths if path not in sys.path]
                if missing:
                    sys.path[0:0] = missing
                    importlib.invalidate_caches()
                self._in_place.update(bundle.digests)
                _lead_packages(bundle)
                bundle.active_generation = self.generation
                return
            others = [b for b in self._loaded.values() if b is not bundle]
            for name, module in list(sys.modules.items()):
                where = getattr(module, "__file__", None) or ""
                if not where:
                    continue
                top = name.partition(".")[0]
                owner = next((b for b in others if where.startswith(b.paths)), None)
                if owner is not None:
                    if name in bundle.digests and owner.digests.get(name) != bundle.digests[name]:
                        owner.parked[name] = module  # a different version: parked
                        del sys.modules[name]
                elif top in bundle.shadowed and not where.startswith(bundle.paths):
                    self._parked_base[name] = module
                    del sys.modules[name]
            for path in bundle.paths:  # this bundle's directories first, the others kept
                while path in sys.path:
                    sys.path.remove(path)
            sys.path[0:0] = bundle.paths
            importlib.invalidate_caches()
            for name in [n for n in self._parked_base if n.partition(".")[0] not in bundle.shadowed]:
                sys.modules.setdefault(name, self._parked_base.pop(name))
            sys.modules.update(bundle.parked)
            bundle.parked = {}
            self._in_place.update(bundle.digests)
            _lead_packages(bundle)
            self.generation += 1
            bundle.active_generation = self.generation


def _lead_packages(bundle: LoadedBundle) -> None:
    """Make each package ``bundle`` ships look for its submodules in ``bundle``'s directory first.

    A package two bundles share (the same copy) is imported once, from the
    directory of whichever came first, and its ``__path__`` names that one
    only. A submodule only this bundle has (another module of the same
    package, or its changed version) would then never be found. The other
    directories stay in ``__path__``, after this one: what they alone hold is
    still found. (A namespace package's ``__path__`` follows ``sys.path``.)
    """
    for name, arcname in bundle.manifest.get("modules", {}).items():
        if not arcname.endswith("/__init__.py"):
            continue
        search = getattr(sys.modules.get(name), "__path__", None)
        if not isinstance(search, list):
            continue
        mine = os.path.join(bundle.path, *arcname.split("/")[:-1])
        if search[:1] != [mine]:
            search[:] = [mine, *(entry for entry in search if entry != mine)]


def _storage_error(exc: OSError, where: str, doing: str) -> OSError:
    """The same OSError, saying where and what to do (a full disk names its directory)."""
    if exc.errno == errno.ENOSPC:
        return OSError(exc.errno, f"no space left on the device of {where} while {doing}: free some, or "
                                  "give the worker another --cache-dir")
    return OSError(exc.errno, f"{doing} in {where} failed: {exc.strerror or exc}")


def _remove_leftovers(root: str) -> None:
    """Remove partial uploads and unpackings of worker processes that no longer run."""
    for name in os.listdir(root):
        kind, _, rest = name.partition("-")
        if kind not in (".incoming", ".unpack"):
            continue
        pid = rest.partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            path = os.path.join(root, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
