"""The comparisons of the summary table, and the targets of issue 4.

Every row is computed from the figures of one run (the JSON), never
asserted: ``ratio`` is always turbolift ÷ baseline of the median (seconds
for times, so lower is better; a rate for throughputs, so higher is
better), and ``met`` is True/False where the issue sets a target, None
where the row is a reference or a figure is missing (then ``status`` says
why).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from .settings import GB, KB, MB, size_key, size_label

TIME, RATE, ITEMS, MBPS, TIMES = "s", "calls/s", "items/s", "MB/s", "x"
# The plain-RPC peers of section 7 (figure prefix, what the baseline column says); pools last.
RPC_PEERS = (("execnet", "execnet channel send/receive to a popen gateway"),
             ("rpyc", "rpyc service call on a unix socket"),
             ("pyro5", "Pyro5 proxy call to a daemon on 127.0.0.1"),
             ("process_pool", "ProcessPoolExecutor(2) `submit().result()`"),
             ("loky", "loky reusable executor (2) `submit().result()`"))


def _figure(results: dict, section: str, name: str) -> Optional[dict]:
    found = results.get("sections", {}).get(section, {})
    if found.get("status") != "ok":
        return None
    figure = found.get("figures", {}).get(name)
    if not figure or not isinstance(figure.get("median"), (int, float)) or math.isnan(figure["median"]):
        return None
    return figure


def _missing(results: dict, section: str, name: str) -> str:
    found = results.get("sections", {}).get(section)
    if not found:
        return "not run"
    if found.get("status") == "skipped":
        return "skipped: " + found.get("reason", "")
    if found.get("status") == "error":
        return "error (see the section)"
    if section == "peers":
        for peer, state in found.get("params", {}).get("status", {}).items():
            if name.startswith(peer + "_") and state != "ok":
                return state
    if section == "payloads":
        for label, why in found.get("params", {}).get("skipped", {}).items():
            if name.endswith(label.replace(" ", "").lower()):
                return f"skipped: {why}"
    return "not measured in this mode"


class _Rows:
    def __init__(self, results: dict) -> None:
        self.results = results
        self.rows: list = []

    def add(self, section: str, what: str, ours: tuple, theirs: tuple, baseline_name: str,
            target: str = "—", check: Optional[Callable[[float, float, dict, dict], bool]] = None,
            field: str = "median", unit: Optional[str] = None) -> None:
        """``ours``/``theirs`` are ``(section, figure name)``; ``check(ratio, ours, f_ours, f_theirs)``."""
        mine = _figure(self.results, *ours)
        other = _figure(self.results, *theirs)
        row = {"section": section, "what": what, "baseline_name": baseline_name, "target": target,
               "turbolift": None, "baseline": None, "turbolift_p99": None, "baseline_p99": None,
               "unit": unit or (mine or other or {}).get("unit"), "ratio": None, "met": None, "status": "ok"}
        if mine is None or other is None:
            row["status"] = _missing(self.results, *(ours if mine is None else theirs))
            self.rows.append(row)
            return
        row.update(turbolift=mine[field], baseline=other[field],
                   turbolift_p99=mine.get("p99") if field == "median" else None,
                   baseline_p99=other.get("p99") if field == "median" else None)
        row["ratio"] = mine[field] / other[field] if other[field] else math.nan
        if check is not None:
            row["met"] = bool(check(row["ratio"], mine[field], mine, other))
        self.rows.append(row)

    def add_ratio(self, section: str, what: str, ours: tuple, baseline_name: str) -> None:
        """A row whose figure is itself a ratio of turbolift to its baseline (a reference)."""
        mine = _figure(self.results, *ours)
        row = {"section": section, "what": what, "baseline_name": baseline_name, "target": "—",
               "turbolift": None, "baseline": None, "turbolift_p99": None, "baseline_p99": None,
               "unit": "x", "ratio": None, "met": None, "status": "ok"}
        if mine is None:
            row["status"] = _missing(self.results, *ours)
        else:
            row.update(turbolift=mine["median"], turbolift_p99=mine.get("p99"), ratio=mine["median"])
        self.rows.append(row)


def evaluate(results: dict) -> list:
    """The rows of the summary table for ``results`` (the suite's JSON)."""
    r = _Rows(results)
    seq, conc, mp, cold, imp, pay, peers = ("sequential", "concurrency", "map", "cold_start",
                                            "import_hook", "payloads", "peers")
    # 1. sequential
    r.add("1", "Sequential remote `add(1, 2)`, per call", (seq, "turbolift_add"), (seq, "raw_echo_add"),
          "raw gRPC echo of the same bytes", "≤ 1.10×", lambda q, *_: q <= 1.10)
    r.add("1", "Sequential remote `noop()`, per call", (seq, "turbolift_noop"), (seq, "raw_echo_noop"),
          "raw gRPC echo of the same bytes", "≤ 1.10×", lambda q, *_: q <= 1.10)
    r.add("1", "Sequential remote `add(1, 2)`, per call", (seq, "turbolift_add"), (seq, "dill_echo_add"),
          "dill-echo (server unpickles, adds, pickles)")
    r.add("1", "Worker side only: pre-serialised `Invoke` frame for `add(1, 2)` on a Session",
          (seq, "worker_direct_add"), (seq, "raw_echo_add"), "raw gRPC echo of the arguments' bytes")
    r.add("1", "Sequential remote `add(1, 2)`, per call", (seq, "turbolift_add"), (seq, "local_add"),
          "in-process call")
    r.add("1", "`add(1, 2)` through the marker, distribution off", (seq, "local_marked_add"),
          (seq, "local_add"), "in-process call")
    # 1. the transport's forms: one round trip of the same request bytes each, same socket kind
    r.add("1", "Sequential remote `add(1, 2)` (speed issue)", (seq, "turbolift_add"), (seq, "raw_echo_add"),
          "raw gRPC sync unary echo of the same bytes", "≤ 0.75×", lambda q, *_: q <= 0.75)
    r.add("1", "Sequential remote `add(1, 2)` ÷ sync stream", (seq, "turbolift_add"),
          (seq, "stream_echo_add"), "bare grpcio sync stream round trip (one long-lived stream)")
    r.add("1", "Sequential remote `add(1, 2)` ÷ calling-thread stream", (seq, "turbolift_add"),
          (seq, "thread_stream_echo_add"), "bare grpcio stream driven by the calling thread (no hand-offs)")
    r.add("1", "Sequential remote `add(1, 2)` ÷ aio stream", (seq, "turbolift_add"),
          (seq, "aio_stream_echo_add"), "bare grpcio aio stream round trip")
    r.add("1", "Sequential remote `add(1, 2)` ÷ aio unary", (seq, "turbolift_add"),
          (seq, "aio_unary_echo_add"), "bare grpcio aio unary echo")
    r.add("1", "Sequential remote `add(1, 2)` ÷ socket ping-pong", (seq, "turbolift_add"),
          (seq, "socket_pingpong_add"), "bare socket ping-pong of the same bytes (the physical limit)")
    r.add("1", "Transport only: sync stream round trip ÷ sync unary", (seq, "stream_echo_add"),
          (seq, "raw_echo_add"), "raw gRPC sync unary echo (what ≤ 0.75× asks of turbolift)")
    r.add("1", "Transport only: calling-thread stream round trip ÷ sync unary",
          (seq, "thread_stream_echo_add"), (seq, "raw_echo_add"), "raw gRPC sync unary echo")
    r.add("1", "Transport only: sync unary echo ÷ socket ping-pong", (seq, "raw_echo_add"),
          (seq, "socket_pingpong_add"), "bare socket ping-pong (gRPC's own cost)")
    r.add("1", "Sequential `add(1, 2)` vs Ray task round trip", (seq, "turbolift_add"), (peers, "ray_seq"),
          "Ray `ray.get(f.remote())`", "≤ 0.40× (≥ 2.5× faster)", lambda q, *_: q <= 0.40)
    r.add("1", "Sequential `add(1, 2)` vs Dask", (seq, "turbolift_add"), (peers, "dask_seq"),
          "Dask `submit().result()`")
    for peer, how in RPC_PEERS:
        r.add("1", f"Sequential `add(1, 2)` vs {how.split(' ', 1)[0]}", (seq, "turbolift_add"),
              (peers, f"{peer}_seq"), how)
    # 2. concurrency
    r.add("2", "64 in flight, `add.submit(1, 2)`", (conc, "turbolift_add_64_in_flight"),
          (conc, "raw_echo_add_64_in_flight"), "raw gRPC echo, 64 grpc futures in flight",
          "≥ 0.90×", lambda q, *_: q >= 0.90)
    r.add("2", "64 in flight, `add.submit(1, 2)`", (conc, "turbolift_add_64_in_flight"),
          (conc, "dill_echo_add_64_in_flight"), "dill-echo, 64 in flight")
    r.add("2", "64 in flight, latency per call", (conc, "turbolift_add_64_in_flight_latency"),
          (conc, "raw_echo_add_64_in_flight_latency"), "raw gRPC echo, 64 in flight")
    for peer, how in RPC_PEERS[-2:]:
        r.add("2", "64 in flight, `add.submit(1, 2)`", (conc, "turbolift_add_64_in_flight"),
              (peers, f"{peer}_64_in_flight"), how.split(" `")[0] + ", 64 futures in flight")
    r.add("2", "Tasks submitted at once, then gathered", (conc, "turbolift_add_burst"),
          (conc, "raw_echo_add_burst"), "raw gRPC echo, same burst")
    r.add("2", "Tasks submitted at once, then gathered", (conc, "turbolift_add_burst"), (peers, "ray_burst"),
          "Ray, same burst", "≥ 2×", lambda q, *_: q >= 2.0)
    r.add("2", "Tasks submitted at once, then gathered", (conc, "turbolift_add_burst"), (peers, "dask_burst"),
          "Dask, same burst")
    # 3. map
    r.add("3", "`map` of a trivial function", (mp, "turbolift_map_trivial"), (mp, "raw_batched_map_trivial"),
          "raw gRPC, same batching work", "≥ 50,000 items/s", lambda q, v, *_: v >= 50_000)
    r.add("3", "`map` of a trivial function", (mp, "turbolift_map_trivial"), (mp, "process_pool_map_trivial"),
          "`ProcessPoolExecutor(2).map`, its best chunksize", "≥ 1.0×", lambda q, *_: q >= 1.0)
    r.add("3", "`map` of a trivial function", (mp, "turbolift_map_trivial"), (peers, "ray_map_trivial"),
          "Ray, one task per item")
    r.add("3", "`map` of a trivial function", (mp, "turbolift_map_trivial"), (peers, "dask_map_trivial"),
          "Dask `client.map`")
    r.add("3", "`map` of a trivial function", (mp, "turbolift_map_trivial"), (peers, "ray_map_batched"),
          "Ray, hand-made batches (best batch size)", "≥ 1.0×", lambda q, *_: q >= 1.0)
    r.add("3", "`map` of a trivial function", (mp, "turbolift_map_trivial"), (peers, "dask_map_batched"),
          "Dask, hand-made batches (best batch size)")
    r.add("3", "`map` of a ~10 ms CPU function, 2 workers", (mp, "turbolift_map_cpu"), (mp, "local_loop_cpu"),
          "local loop", "≤ 0.556× (≥ 1.8× faster)", lambda q, *_: q > 0 and 1.0 / q >= 1.8)
    r.add("3", "`map` of a ~10 ms CPU function, 2 workers", (mp, "turbolift_map_cpu"),
          (mp, "process_pool_cpu"), "bare `ProcessPoolExecutor` of 2 processes (what the cores allow)")
    r.add("3", "`map` of a ~10 ms CPU function: speed-up over the local loop",
          (mp, "turbolift_map_cpu_speedup"), (mp, "process_pool_cpu_speedup"),
          "bare `ProcessPoolExecutor`'s speed-up")
    r.add("3", "`map` of a ~10 ms CPU function: speed-up over the local loop",
          (mp, "turbolift_map_cpu_speedup"), (peers, "ray_map_cpu_speedup"),
          "Ray's speed-up, one task per item")
    r.add("3", "`map` of a ~10 ms CPU function: speed-up over the local loop",
          (mp, "turbolift_map_cpu_speedup"), (peers, "dask_map_cpu_speedup"), "Dask's speed-up, `client.map`")
    # 4. cold start
    r.add("4", "Cold start, start to exit", (cold, "turbolift_exit"), (cold, "plain_exit"),
          "`python app.py`", "adds ≤ 0.5 s",
          lambda q, v, mine, other: (mine["median"] - other["median"]) <= 0.5)
    r.add("4", "Cold start, to the first result", (cold, "turbolift_first_result"),
          (cold, "plain_first_result"), "`python app.py`")
    r.add("4", "Cold start, start to exit", (cold, "turbolift_exit"), (peers, "ray_cold_exit"),
          "Ray script (init, one task, shutdown)")
    r.add("4", "Cold start, start to exit", (cold, "turbolift_exit"), (peers, "dask_cold_exit"),
          "Dask script (LocalCluster, one task, close)")
    # 5. import hook
    r.add("5", "Importing many modules (no marked functions)", (imp, "with_hook_import"),
          (imp, "without_hook_import"), "same imports without the hook", "≤ 1.05×",
          lambda q, *_: q <= 1.05)
    r.add_ratio("5", "Importing many modules: ratio of back-to-back pairs", (imp, "paired_ratio"),
                "with ÷ without the hook, per pair of runs")
    # 6. payloads (rates: the figure's mb_per_s comes from its median)
    for size in (100 * KB, MB, 10 * MB, 100 * MB, GB):
        key, label = size_key(size), size_label(size)
        for way, what in (("upload", "argument"), ("download", "result")):
            target, check = "—", None
            if size == 100 * MB:
                target, check = "≥ 0.70×", (lambda q, *_: q >= 0.70)
            elif size <= 10 * MB:   # the second speed issue: 100 KB-10 MB at 0.8x bare gRPC's rate
                target, check = "≥ 0.80×", (lambda q, *_: q >= 0.80)
            r.add("6", f"{label} {what}: transfer rate", (pay, f"turbolift_{way}_{key}"),
                  (pay, f"raw_{way}_{key}"), "raw gRPC transfer of the same bytes", target, check,
                  field="mb_per_s", unit=MBPS)
        if size == GB:
            for way, what in (("upload", "argument"), ("download", "result")):
                for side, who in (("caller", "caller"), ("server", "worker")):
                    r.add("6", f"1 GB {what}: peak RSS of the {who}, × payload",
                          (pay, f"turbolift_{way}_{key}"), (pay, f"raw_{way}_{key}"),
                          "raw gRPC (client / bare server)", "≤ 3×",
                          lambda q, v, *_: v <= 3.0, field=f"peak_{side}_x_payload", unit=TIMES)
    return r.rows
