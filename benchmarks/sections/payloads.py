"""6. Large payloads: throughput and peak memory.

For each size (1 MB and 100 MB; in full mode also 100 KB and 10 MB, and
1 GB when the machine has the memory), in both directions:

* upload (an argument): turbolift ``size_of(data)`` against a raw grpcio
  call to ``Sink`` carrying ``turbolift._wire.serialize.dumps(((data,), {}))``,
  the very bytes turbolift sends (built outside the timed region, after
  turbolift's turn, and freed right after the call, so that they never
  inflate turbolift's memory figure);
* download (a result): turbolift ``payload(size)`` against a raw call to
  ``Source``, which replies with the pickled payload. Both servers build the
  payload once beforehand (``prepare``), so a timed call only serialises
  (turbolift) and sends; the turbolift worker keeps the payload object, the
  baseline server its pickled bytes (1x each).

The baseline is what a bare grpcio program would do: one unary message
each way, with raised message limits. How turbolift carries the bytes
(inline, or streamed in chunks above its inline limit) is its own business
and part of what is measured.

All uploads of a size run first, then the downloads, so that no process
holds a payload of the other direction while it is measured (the caller
drops its argument before the downloads). Each repetition runs both, each
after a full ``gc.collect()``, turbolift first in even repetitions and the
baseline first in odd ones (:func:`_in_turns`); the first round is a discarded warm-up for sizes below
``mode.payload_warmup_below`` (the smaller sizes have warmed up the path
for the largest).

Figures: seconds per transfer (median, p99), the transfer rate in MB/s
(from the median), and peak resident memory (``VmHWM``) of the caller,
the turbolift worker and the baseline server during the transfer, reset
before each one through ``/proc/PID/clear_refs``; the highest over the
repetitions is kept, with the process's resident size just before that
transfer (``rss_before_*``: the interpreter, and for the caller the
payload it holds). ``peak_*_x_payload`` is the whole peak over the size.
"""
from __future__ import annotations

import gc
import os
import time
from typing import Callable, Optional

from turbolift._wire import serialize as _serialize

from .. import memory, workloads
from ..measure import Budget, summarise
from ..settings import FULL, GB, MB, size_key, size_label
from . import Skip

TITLE = "Payloads"


def _enough_memory(size: int) -> Optional[str]:
    """None if the machine can afford ``size``; else why not."""
    needed = 10 * size  # caller, one worker and one server, each up to ~3x, plus slack
    available = memory.available_bytes()
    if available is None:
        return "cannot read MemAvailable from /proc/meminfo"
    if available < needed:
        return (f"needs ~{needed / GB:.0f} GB of available memory, "
                f"{available / GB:.1f} GB available")
    return None


class _Peaks:
    """Peak RSS of a set of processes during one transfer."""

    def __init__(self, pids: list) -> None:
        self.pids = pids

    def measure(self, action: Callable, *args: object) -> tuple:
        """(value, seconds, {pid: (resident before, peak during)}) of ``action(*args)``."""
        before = {}
        for pid in self.pids:
            memory.reset_peak(pid)
            before[pid] = memory.resident_bytes(pid) or 0
        began = time.perf_counter()
        value = action(*args)
        seconds = time.perf_counter() - began
        return value, seconds, {pid: (before[pid], memory.peak_bytes(pid) or 0) for pid in self.pids}


def run(ctx) -> dict:
    mode = ctx.mode
    remote = ctx.contenders.remote
    baseline = ctx.contenders.baseline
    me = os.getpid()
    can_reset = memory.reset_peak(me)
    budget = Budget(mode.payload_budget)
    figures: dict = {}
    sizes = {size for size, _ in mode.payloads}
    skipped: dict = {size_label(size): "full mode only" for size, _ in FULL.payloads if size not in sizes}
    for size, reps in mode.payloads:
        reason = _enough_memory(size)
        if reason is None and budget.expired():
            reason = "time budget of the section spent"
        if reason:
            skipped[size_label(size)] = reason
            ctx.log(f"payloads: {size_label(size)} skipped: {reason}")
            continue
        warm_up = size < mode.payload_warmup_below
        figures.update(_one_size(ctx, size, reps, remote, baseline, me, warm_up=warm_up))
        gc.collect()
    if not figures:
        raise Skip("no payload size could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return {
        "figures": figures,
        "params": {"sizes": [size for size, _ in mode.payloads],
                   "reps": {size_label(size): reps for size, reps in mode.payloads},
                   "skipped": skipped, "peak_reset_supported": can_reset},
        "notes": [f"{label} skipped: {why}" for label, why in skipped.items()]
        + ([] if can_reset else ["VmHWM could not be reset: peaks are since process start"]),
    }


def _one_size(ctx, size: int, reps: int, remote, baseline, me: int, warm_up: bool) -> dict:
    key = size_key(size)
    worker_pids = ctx.contenders.worker_pids()
    server_pids = baseline.pids
    held = [workloads.make_payload(size)]   # the argument, dropped before the downloads
    size_request = str(size).encode()
    times: dict = {f"{who}_{way}": [] for who in ("turbolift", "raw") for way in ("upload", "download")}
    peaks: dict = {name: {"caller": (0, 0), "server": (0, 0)} for name in times}

    def note(name: str, seconds: float, found: dict, server_side: list) -> None:
        """Keep the highest peak (with the resident size before it) per side."""
        times[name].append(seconds)
        peaks[name]["caller"] = max(peaks[name]["caller"], found[me], key=lambda pair: pair[1])
        peaks[name]["server"] = max([peaks[name]["server"], *(found[p] for p in server_side)],
                                    key=lambda pair: pair[1])

    tl = _Peaks([me, *worker_pids])
    raw = _Peaks([me, *server_pids])
    rounds = range(reps + (1 if warm_up else 0))

    def upload_turbolift(timed: bool) -> None:
        value, seconds, found = tl.measure(remote.size_of, held[0])
        if value != size:
            raise RuntimeError(f"turbolift size_of returned {value} for {size} bytes")
        if timed:
            note("turbolift_upload", seconds, found, worker_pids)

    def upload_raw(timed: bool) -> None:
        request = _serialize.dumps(((held[0],), {}), for_worker=True)
        expected = str(len(request)).encode()
        sink = baseline.caller("Sink", request, timeout=600)
        value, seconds, found = raw.measure(sink)
        del request, sink
        if value != expected:
            raise RuntimeError(f"baseline Sink received {value!r} bytes, expected {expected!r}")
        if timed:
            note("raw_upload", seconds, found, server_pids)

    def download_turbolift(timed: bool) -> None:
        value, seconds, found = tl.measure(remote.payload, size)
        received = len(value)
        del value
        if received != size:
            raise RuntimeError(f"turbolift payload returned {received} bytes, expected {size}")
        if timed:
            note("turbolift_download", seconds, found, worker_pids)

    def download_raw(timed: bool) -> None:
        value, seconds, found = raw.measure(baseline.caller("Source", size_request, timeout=600))
        received = len(value)
        del value
        if received < size:
            raise RuntimeError(f"baseline Source returned {received} bytes, expected at least {size}")
        if timed:
            note("raw_download", seconds, found, server_pids)

    for rep in rounds:  # uploads: nothing else large is held anywhere but the caller's argument
        _in_turns(rep, warm_up, upload_turbolift, upload_raw)
    held.clear()
    gc.collect()

    _on_every_server(remote, baseline, worker_pids, "prepare", size_request, size)
    for rep in rounds:  # downloads: each server holds its payload (1x) before the call
        _in_turns(rep, warm_up, download_turbolift, download_raw)
    _on_every_server(remote, baseline, worker_pids, "release", b"", 0)

    figures = {}
    for name, samples in times.items():
        figure = summarise(samples, "s")
        figure["bytes"] = size
        figure["mb_per_s"] = size / MB / figure["median"] if figure["n"] else float("nan")
        for side in ("caller", "server"):
            before, peak = peaks[name][side]
            figure[f"peak_{side}_bytes"] = peak
            figure[f"rss_before_{side}_bytes"] = before
            figure[f"peak_{side}_x_payload"] = peak / size
        figures[f"{name}_{key}"] = figure
    ctx.log(f"payloads {size_label(size)}: " + ", ".join(
        f"{name} {figures[f'{name}_{key}']['mb_per_s']:,.0f} MB/s" for name in times))
    return figures


def _in_turns(rep: int, warm_up: bool, turbolift_turn: Callable, raw_turn: Callable) -> None:
    """One repetition: both transfers, each after a full collection, turbolift first in even
    repetitions and the baseline first in odd ones. (A collection before one of them only, or the
    same one always first, favoured the other: it ran with the caches and allocator the first left
    warm, 0.70x for 1 MB against 0.82-0.86x with both collected.)"""
    timed = rep > 0 or not warm_up
    for turn in (turbolift_turn, raw_turn) if rep % 2 == 0 else (raw_turn, turbolift_turn):
        gc.collect()
        turn(timed)


def _on_every_server(remote, baseline, worker_pids: list, what: str, request: bytes, size: int) -> None:
    """Prepare (or release) the payload on every turbolift worker and baseline server.

    Sequential turbolift calls rotate over the workers; the function returns
    its worker's pid, so the loop stops once every worker has answered.
    """
    seen: set = set()
    for _ in range(8 * len(worker_pids)):
        if what == "prepare":
            seen.add(remote.prepare_payload(size))
        else:
            seen.add(remote.release_payloads())
        if seen >= set(worker_pids):
            break
    else:
        raise RuntimeError(f"could not reach every turbolift worker to {what} the payload "
                           f"(reached {sorted(seen)} of {sorted(worker_pids)})")
    method = "Prepare" if what == "prepare" else "Release"
    for call in baseline.method(method):
        call(request, timeout=600)
