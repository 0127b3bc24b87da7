"""``turbolift trace SCRIPT``: a dry run that says what distributing the program would cost.

The program runs locally, in this process, with every marked function
bound to a :class:`TracingStub` that runs the call here and measures it:
the number of calls, the serialised size of its arguments and results,
and the time it took. At exit the report gives, for each function, the
bundle that would ship (files, bytes, pinned requirements) and an estimate
of the time distributed: the local time plus, per call, the cost of a
remote call and of moving its bytes. Nothing is deployed and no worker is
started. The per-call cost and the transfer rate are this machine's
figures from ``python -m benchmarks`` (sequential call, 1 MB payload);
``--call-overhead-ms`` and ``--megabytes-per-second`` set others.
"""
from __future__ import annotations

import concurrent.futures as cf
import inspect
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from .. import _runtime
from .._settings import Settings
from .._wire import serialize, streamed
from .bundling import describe, target_for
from .units import duration, size

CALL_OVERHEAD_SECONDS = 0.0006     # a sequential remote call of a trivial function, beyond its work
BYTES_PER_SECOND = 200e6           # arguments and results of about 1 MB
MAP_ITEM_OVERHEAD_SECONDS = 1e-6   # an item of f.map (items travel in batches)
TOO_SHORT = 10                     # calls shorter than this many call overheads gain nothing


@dataclass
class FunctionStats:
    name: str
    function: Any
    seconds: list = field(default_factory=list)
    argument_bytes: list = field(default_factory=list)
    result_bytes: list = field(default_factory=list)
    unsendable: Optional[str] = None    # why an argument or result could not travel, if one could not
    mapped: int = 0                     # how many of the calls were items of f.map


class TraceClient:
    """The runtime's client during a trace: binds marked functions to tracing stubs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats: dict[str, FunctionStats] = {}
        self._lock = threading.Lock()

    def bind(self, function: Any) -> "TracingStub":
        name = f"{function.__module__}.{function.__qualname__}"
        with self._lock:
            stats = self.stats.setdefault(name, FunctionStats(name, function))
        return TracingStub(function, stats, self._lock)

    def worker_pids(self) -> list[int]:
        return []

    def finish(self) -> None:
        pass

    def wait_loaded(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class TracingStub:
    """Runs each call here and records what it would have sent and how long it took."""

    def __init__(self, function: Any, stats: FunctionStats, lock: threading.Lock) -> None:
        self._function = function
        self._stats = stats
        self._lock = lock

    def with_function(self, function: Any) -> "TracingStub":
        return TracingStub(function, self._stats, self._lock)

    def _size(self, value: Any, for_worker: bool, what: str) -> int:
        with _runtime.turbolift_code():
            try:
                return len(serialize.dumps(value, for_worker=for_worker, what=what))
            except TypeError as exc:
                self._stats.unsendable = self._stats.unsendable or str(exc)
                return 0

    def call(self, args: tuple, kwargs: dict, mapped: bool = False) -> Any:
        sent = self._size((args, kwargs), True, "arguments")
        started = time.perf_counter()
        value = self._function.local(*args, **kwargs)
        elapsed = time.perf_counter() - started
        # (a coroutine is awaited by the program; a streamed result is not copied whole)
        streams = inspect.iscoroutine(value) or streamed.result_streams(value)
        returned = 0 if streams else self._size(value, False, "result")
        with self._lock:
            self._stats.seconds.append(elapsed)
            self._stats.argument_bytes.append(sent)
            self._stats.result_bytes.append(returned)
            self._stats.mapped += mapped
        return value

    def submit(self, args: tuple, kwargs: dict) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(self.call(args, kwargs))
        except BaseException as exc:   # stored, as an executor would
            future.set_exception(exc)
        return future

    def map(self, iterables: tuple, timeout: Optional[float] = None,
            chunksize: Optional[int] = None) -> Iterator:
        return (self.call(args, {}, mapped=True) for args in zip(*iterables))


def report(stats: dict[str, FunctionStats], overhead: float, rate: float) -> dict:
    """The trace's findings, one entry per marked function that was called."""
    found = {}
    for name, each in sorted(stats.items()):
        if not each.seconds:
            continue
        try:
            bundle = target_for(each.function).bundle
            shipped = describe(bundle)
            bundle_info = {"files": len(shipped["files"]), "bytes": shipped["size"],
                           "requirements": shipped["requirements"]}
        except Exception as exc:   # noqa: BLE001  (the report says why instead)
            bundle_info = {"error": str(exc)}
        local = sum(each.seconds)
        moved = sum(each.argument_bytes) + sum(each.result_bytes)
        single = len(each.seconds) - each.mapped
        estimate = local + single * overhead + each.mapped * MAP_ITEM_OVERHEAD_SECONDS + moved / rate
        median = statistics.median(each.seconds)
        found[name] = {
            "calls": len(each.seconds), "map_items": each.mapped, "bundle": bundle_info,
            "argument_bytes": {"median": statistics.median(each.argument_bytes),
                               "largest": max(each.argument_bytes)},
            "result_bytes": {"median": statistics.median(each.result_bytes),
                             "largest": max(each.result_bytes)},
            "seconds_per_call": {"median": median, "largest": max(each.seconds)},
            "local_seconds": local, "estimated_distributed_seconds": estimate,
            "too_short": single > each.mapped and median < TOO_SHORT * overhead,
            "unsendable": each.unsendable,
        }
    return found


def human(found: dict, overhead: float) -> str:
    if not found:
        return "turbolift trace: no marked function was called"
    lines = ["turbolift trace: what distributing this run would cost (nothing was deployed)"]
    for name, entry in found.items():
        bundle = entry["bundle"]
        shipped = (f"{bundle['files']} file(s), {size(bundle['bytes'])}, pinned: "
                   f"{', '.join(f'{k}=={v}' for k, v in bundle['requirements'].items()) or 'none'}"
                   if "error" not in bundle else f"cannot be bundled: {bundle['error']}")
        args, result, per = entry["argument_bytes"], entry["result_bytes"], entry["seconds_per_call"]
        lines += [
            f"{name}: {entry['calls']} call(s), {entry['map_items']} of them items of map",
            f"    bundle: {shipped}",
            f"    arguments: median {size(args['median'])}, largest {size(args['largest'])}; "
            f"results: median {size(result['median'])}, largest {size(result['largest'])}",
            f"    time per call: median {duration(per['median'])}, largest {duration(per['largest'])}; "
            f"local total {duration(entry['local_seconds'])}, distributed (one worker, estimated) "
            f"{duration(entry['estimated_distributed_seconds'])}",
        ]
        if entry["unsendable"]:
            lines.append(f"    warning: would fail distributed: {entry['unsendable']}")
        if entry["too_short"]:
            lines.append(f"    warning: its calls take {duration(per['median'])}, less than {TOO_SHORT}x the "
                         f"~{duration(overhead)} a remote call costs: distributed it gains nothing; give "
                         "each call more work, or use f.map (which batches)")
    return "\n".join(lines)


def print_report(client: TraceClient, overhead: float, rate: float, as_json: bool) -> None:
    import json

    found = report(client.stats, overhead, rate)
    print(json.dumps(found, indent=2) if as_json else human(found, overhead), file=sys.stderr)
