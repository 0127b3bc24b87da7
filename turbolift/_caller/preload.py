"""Readying the workers for a marked module while the program goes on.

A first call of a module's function costs more than the call: the caller
builds the module's bundle, the worker receives and unpacks it, then
imports the module (for a project of 500 modules, most of a second). None
of it needs the call's arguments. So when distribution is on, each marked
function of an importable module is noted as it is bound, which happens
while its module is being imported; one thread, ``turbolift-preload``,
waits until that import has finished, builds the bundle and sends it to
each worker of the function's cluster that lacks it, asking the worker to
import the module (``BundleHeader.preload``). That work then overlaps with
whatever the program does between importing the module and calling into
it; a first call that comes while its worker is being readied waits for
that instead of sending the bundle again (see :func:`ready_workers`). The
call still makes its own bundle, as without preloading (from the bundle
cache the preload filled, which checks what the build read): modules the
program imported meanwhile can change it, and it must not depend on when
the preload ran.

Workers are never started for a preload: a cluster is readied only once
its workers were started, by ``python -m turbolift`` at start-up or by a
first call (so under ``TURBOLIFT=1``, where workers start at the first
call, the modules imported before it are not preloaded, and a helper
process that inherits the variable but calls nothing starts none).
Only the project's modules are preloaded: not those of the standard
library or of installed distributions (a worker imports its own copy),
nor functions that travel by value (those of ``__main__``, closures:
their bundle is made per call site), nor a module whose import failed or
that was executed outside the import system, nor one whose files were
not scanned before: the preload never parses a source (see
``bundling.WouldParse``), it builds from the scans the bundle cache kept,
so a project's first run and a run after an edit are not preloaded.
``preload = false`` (``TURBOLIFT_PRELOAD=0``) switches it off; the workers
then import a module at its first call, as before.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Any, Optional

from .._wire.by_value import travels_by_value
from ..v1 import worker_pb2 as pb
from .bundling import Bundle, module_bundle_ahead, needs_shipping
from .exchange import upload_aside

log = logging.getLogger("turbolift")

POLL_SECONDS = 0.01     # how often the thread looks whether a module's import has finished
JOIN_SECONDS = 10.0     # what shutdown waits for an exchange (they fail once channels close)


def _import_finished(name: str, closed: threading.Event) -> bool:
    """Wait until the import of module ``name`` (in progress when its functions were bound) has
    finished; False when it failed, when it was not made by the import system, or on close."""
    while not closed.is_set():
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if module is None or spec is None:
            return False   # the import failed (the module was removed), or it was executed by hand
        # importlib marks a spec whose module is still executing (CPython 3.4+); a spec without
        # the mark was never executed by the import system, and is taken as it is.
        if not getattr(spec, "_initializing", False):
            return True
        closed.wait(POLL_SECONDS)
    return False


class Preloader:
    """The preloads of one :class:`~.client.Client`: noted functions, the thread that sends them."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._noted: dict[tuple, dict] = {}     # (cluster key, module) -> {qualname: marked function}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._closed = threading.Event()
        self._exchanging = False                # in the part that talks to workers (shutdown waits for it)

    def note(self, function: Any) -> None:
        """``function`` (a ``TurboliftFunction``) was just bound: preload its module once imported."""
        module = function.__module__
        if not module or travels_by_value(module, function.__qualname__):
            return
        key = (self._client.cluster_key(function.cluster), module)
        with self._lock:
            if self._closed.is_set():
                return
            functions = self._noted.get(key)
            if functions is not None:   # (a copy with other options, or noted late: no matter)
                functions[function.__qualname__] = function
                return
            self._noted[key] = {function.__qualname__: function}
            self._queue.put(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="turbolift-preload", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop preloading (what the thread does next sees it)."""
        with self._lock:
            self._closed.set()
            self._queue.put(None)

    def join(self) -> None:
        """Once the dispatchers are closed: wait (bounded) for an exchange that was under way to end,
        so that no gRPC call is left running at exit. A build under way is not waited for."""
        thread = self._thread
        deadline = time.monotonic() + JOIN_SECONDS
        while thread is not None and thread.is_alive() and self._exchanging and time.monotonic() < deadline:
            thread.join(POLL_SECONDS)

    def _run(self) -> None:
        while True:
            key = self._queue.get()
            if key is None or self._closed.is_set():
                return
            _, module = key
            if not _import_finished(module, self._closed):
                continue
            with self._lock:
                functions = list(self._noted[key].values())
            try:
                self._preload(functions)
            except Exception as exc:   # noqa: BLE001  (the first call does it all again, and reports)
                if not self._closed.is_set():   # (at exit, the cluster stopping under it)
                    log.info("could not preload %s: %s", module, exc)
            finally:
                self._exchanging = False

    def _preload(self, functions: list) -> None:
        module = functions[0].__module__
        if not needs_shipping(module):
            return   # (the standard library, an installed distribution: the worker has its own)
        with self._lock:   # (so that a shutdown either comes first or closes what this starts)
            if self._closed.is_set():
                return
            dispatcher = self._client.started_dispatcher(functions[0].cluster)
            if dispatcher is None:
                return
            dispatcher.start()
        started = time.monotonic()
        bundle = module_bundle_ahead(module)
        if bundle is None:
            log.info("not preloading %s: its files were not scanned before (the first call scans them; "
                     "a later run preloads, once they are two seconds old)", module)
            return
        refs = [pb.FunctionRef(bundle_id=bundle.id, module=module, qualname=function.__qualname__)
                for function in functions]
        log.info("preloading %s (bundle built in %.0f ms)", module, 1000 * (time.monotonic() - started))
        with self._lock:
            if self._closed.is_set():
                return
            self._exchanging = True
        # Waited for here, not inside the dispatcher (which holds its lock meanwhile): a program
        # that exits before its workers are up must not wait for them to stop them.
        dispatcher.cluster.wait_ready(dispatcher.cluster.ready_timeout)
        if not self._closed.is_set():
            ready_workers(dispatcher, bundle, refs)


_preloads_lock = threading.Lock()   # over every Connection.preloads


def ready_workers(dispatcher: Any, bundle: Bundle, refs: list) -> None:
    """Send ``bundle`` to each worker of ``dispatcher`` that lacks it, asking it to import the
    modules of ``refs`` (FunctionRefs): what the first calls would do, done before them.

    One worker after the other, in the order calls pick them when none is busy. A preload is
    not counted as a call in flight, so calls still go where they would have gone; a call that
    comes meanwhile to the worker being readied waits for it (``Connection.preloads``). Failures
    are left for the calls to meet and report: a worker lost here is not marked lost.
    """
    for connection in dispatcher.connections():
        if dispatcher.closed:
            return
        with _preloads_lock:
            if not connection.alive or bundle.id in connection.bundles or bundle.id in connection.preloads:
                continue
            done = connection.preloads[bundle.id] = threading.Event()
        started = time.monotonic()
        try:
            upload_aside(connection, bundle, tuple(refs), dispatcher.prefix)
            log.info("readied worker %s for %s (bundle %s) in %.0f ms", connection.address,
                     ", ".join(sorted({ref.module for ref in refs})), bundle.id[:19],
                     1000 * (time.monotonic() - started))
        except Exception as exc:   # noqa: BLE001  (the first call meets it again, and reports it)
            log.info("could not ready worker %s for bundle %s: %s", connection.address, bundle.id[:19], exc)
        finally:
            with _preloads_lock:
                connection.preloads.pop(bundle.id, None)
            done.set()
