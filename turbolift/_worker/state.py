"""What every RPC of one worker shares, and the failures an exchange can end in.

Sessions find bundles and functions here; a problem that is not the
function's own exception is a :class:`Failure` carrying the gRPC status it
maps to, which the Session sends as a Failure frame.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import grpc

from .._version import __version__
from .._wire.frames import server_frame
from ..errors import BundleError, EnvironmentMismatch
from ..v1 import worker_pb2 as pb
from . import capture, repeated_imports
from .bundle_store import BundleStore, LoadedBundle
from .cancel import Watchdog

MAX_PRELOADED = 64   # preloaded modules whose import's output waits for their first call


class Failure(Exception):
    """An exchange failed with ``code`` (a ``grpc.StatusCode``); ``details`` say what to do."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 differences: Optional[list] = None) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.differences = differences

    def frame(self) -> pb.ServerFrame:
        return server_frame("failure",
            code=self.code.value[0], details=self.details,
            differences=json.dumps(self.differences) if self.differences is not None else "")


@dataclass
class WorkerState:
    store: BundleStore
    watchdog: Watchdog
    worker_id: str
    token: Optional[str] = None
    previous_exit: str = ""
    started: float = field(default_factory=time.time)

    def bundle(self, bundle_id: str) -> Optional[LoadedBundle]:
        """The loaded bundle, or None when this worker does not hold it (the caller uploads it)."""
        try:
            return self.store.load(bundle_id)
        except EnvironmentMismatch as exc:
            raise Failure(grpc.StatusCode.FAILED_PRECONDITION, str(exc), exc.differences) from None
        except BundleError as exc:
            raise Failure(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None

    # (bundle id, module) -> what the preload's import of it held, for the first call of it here
    _preloaded: dict = field(default_factory=dict, init=False, repr=False)

    def function(self, bundle: LoadedBundle, ref: pb.FunctionRef, events: Optional[capture.Events] = None,
                 report: bool = True) -> Callable:
        """The real function ``ref`` names in ``bundle`` (importing its module the first time).

        What that import prints, logs and warns is held and given to ``events``
        when it ends (:mod:`.repeated_imports`). Not when ``report`` is false
        (the preload's import): then it is kept, for the first call of the
        module, which gives it instead of what its own try made (a retry of a
        failed import does not repeat the sub-imports that succeeded).
        """
        key = (bundle.id, ref.module)
        found = bundle.loaded(ref.module, ref.qualname)
        if found is not None:
            if self._preloaded and report and key in self._preloaded:
                capture.give_held(self._preloaded.pop(key), events)
            return found
        scope = repeated_imports.RepeatedImports()
        loaded = False
        try:
            with scope:
                found = self._resolve(bundle, ref)
            loaded = True
            return found
        finally:
            if not report:
                if scope.events and key not in self._preloaded and len(self._preloaded) < MAX_PRELOADED:
                    self._preloaded[key] = scope
            else:
                earlier = self._preloaded.pop(key, None)
                capture.give_held(earlier if earlier is not None and not loaded else scope, events)

    @staticmethod
    def _resolve(bundle: LoadedBundle, ref: pb.FunctionRef) -> Callable:
        try:
            return bundle.resolve(ref.module, ref.qualname)
        except (LookupError, AttributeError, ImportError) as exc:
            where = f"{ref.module}.{ref.qualname} in bundle {ref.bundle_id}"
            raise Failure(grpc.StatusCode.NOT_FOUND, f"cannot find {where}: {exc}") from None
        except BaseException as exc:  # SystemExit at import (argparse!) must not go unanswered
            failed = f"{type(exc).__name__}: {exc}"
            raise Failure(grpc.StatusCode.FAILED_PRECONDITION,
                          f"importing {ref.module} on the worker failed: {failed}") from None

    def preload(self, bundle_id: str, refs: Iterable[pb.FunctionRef], wanted: Callable[[], bool]) -> None:
        """Load bundle ``bundle_id`` and import the modules of ``refs`` (functions in it) while
        ``wanted()``, as the first call of each would. Nothing is reported: the bundle is stored,
        and a call that comes meets any failure again and reports it as it would have without this."""
        try:
            bundle = self.bundle(bundle_id)
        except Exception:   # (a Failure, or anything else: the call finds it again)
            return
        for ref in refs:
            if bundle is None or not wanted():
                return
            if ref.bundle_id != bundle_id:
                continue
            try:
                self.function(bundle, ref, report=False)
            except Exception:   # (as above)
                pass

    def describe(self) -> pb.DescribeReply:
        held = self.store.sizes()
        resident = _resident_bytes()
        return pb.DescribeReply(
            worker_id=self.worker_id, pid=os.getpid(), python_version=platform.python_version(),
            implementation=platform.python_implementation().lower(), turbolift_version=__version__,
            bundles=[bundle_id for bundle_id, _ in held], calls_served=self.watchdog.served,
            calls_running=self.watchdog.running, previous_exit=self.previous_exit, started=self.started,
            memory_rss=resident,
            # (the kernel updates the high-water mark lazily: it may lag the current figure)
            memory_peak=max(resident, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
            held=[pb.BundleInfo(bundle_id=bundle_id, size=size) for bundle_id, size in held],
            hostname=socket.gethostname(), slots=self.watchdog.slots)


def _resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
