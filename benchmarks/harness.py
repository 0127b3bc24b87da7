"""What the in-process sections share: the turbolift cluster and the baseline.

:func:`contenders` starts, side by side, a turbolift ``LocalQueue`` of
``mode.workers`` worker processes and as many bare grpcio baseline server
processes (:mod:`benchmarks.baseline_server`), so every in-process figure
is measured against its baseline with the same number of server
processes, in the same run. Turbolift is used as a program would use it:
distribution is switched on with ``turbolift._enabling.switch.enable`` and the
functions of :mod:`benchmarks.workloads` are marked with ``turbolift.on``
afterwards, which binds them to remote stubs; workers receive the
``benchmarks`` package as a bundle.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

from . import workloads
from .baseline_server import BaselineServers
from .settings import Mode

CALL_TIMEOUT = 600.0  # a deadline on every remote call, so that nothing can hang the suite
FUNCTIONS = ("noop", "add", "inc", "burn", "size_of", "payload", "prepare_payload", "release_payloads")


@dataclass
class Contenders:
    remote: SimpleNamespace          # marked functions bound to the cluster (distribution on)
    local_marked: SimpleNamespace    # the same functions marked while distribution was off
    baseline: BaselineServers
    queue: object                    # the turbolift.LocalQueue
    worker_pids: Callable[[], list]
    startup: dict = field(default_factory=dict)


@contextlib.contextmanager
def contenders(mode: Mode, tmp: Path, log: Callable[[str], None]) -> Iterator[Contenders]:
    import turbolift
    from turbolift import _runtime
    from turbolift._enabling import switch

    queue = turbolift.LocalQueue(workers=mode.workers, cache_dir=str(tmp / "turbolift-cache"))

    def mark() -> SimpleNamespace:
        return SimpleNamespace(**{name: turbolift.on(queue, timeout=CALL_TIMEOUT)(getattr(workloads, name))
                                  for name in FUNCTIONS})

    local_marked = mark()  # distribution is still off: these run in-process
    baseline = None
    switch.enable(queue)
    try:
        started = time.perf_counter()
        baseline = BaselineServers(mode.workers, transport=queue.transport)
        baseline_ready = time.perf_counter() - started
        remote = mark()  # marked after enable: bound to remote stubs
        started = time.perf_counter()
        if remote.add(1, 2) != 3:
            raise RuntimeError("turbolift returned a wrong result for add(1, 2)")
        first_call = time.perf_counter() - started
        # Reach every worker once (bundle upload) before anything is timed.
        for future in [remote.noop.submit() for _ in range(8 * mode.workers)]:
            future.result(timeout=60)
        pids = _runtime.worker_pids()
        if len(pids) != mode.workers:
            raise RuntimeError(f"expected {mode.workers} turbolift workers, found pids {pids}")
        log(f"turbolift: {mode.workers} workers up (first call {first_call:.2f}s); "
            f"baseline: {mode.workers} servers ({baseline_ready:.2f}s)")
        yield Contenders(remote=remote, local_marked=local_marked, baseline=baseline, queue=queue,
                         worker_pids=_runtime.worker_pids,
                         startup={"turbolift_first_call_s": first_call, "baseline_ready_s": baseline_ready})
    finally:
        _runtime.disable()
        if baseline is not None:
            baseline.close()
