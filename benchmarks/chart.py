"""The PNG: turbolift next to its baselines and peers, one panel per question.

Bars are medians; a black tick marks the p99 where one exists. Panels:
per-call latency, throughput, ``map`` rate, cold start, import time and
payload transfer rate. Missing figures (skipped peers, sizes not run) are
simply absent. Uses matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from .report import fmt
from .settings import GB, KB, MB, size_key, size_label

TURBOLIFT, PARTIAL, BASELINE, PEER, LOCAL = "#1f6feb", "#79b8ff", "#8c959f", "#d4731f", "#2da44e"


def _get(results: dict, section: str, name: str, field: str = "median"):
    found = results.get("sections", {}).get(section, {})
    figure = found.get("figures", {}).get(name) if found.get("status") == "ok" else None
    if not figure:
        return None, None
    value = figure.get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, None
    return value, figure.get("p99") if field == "median" else None


def _short(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _panel(ax, title: str, unit: str, bars: list, label: Callable = _short, log: bool = False) -> None:
    """Bars of ``(name, (median, p99), colour)``; ``label`` formats a median for its annotation."""
    shown = [(name, value, p99, colour) for name, (value, p99), colour in bars if value is not None]
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit, fontsize=8)
    if not shown:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        return
    names = [name for name, *_ in shown]
    crowded = len(shown) > 10   # labels upright, so that they do not run into each other
    positions = range(len(shown))
    values = [value for _, value, _, _ in shown]
    if log:
        ax.set_yscale("log")
        bottom = min(values) / 4
        ax.set_ylim(bottom, max(values + [p for _, _, p, _ in shown if p]) * (40 if crowded else 4))
        ax.bar(positions, [v - bottom for v in values], bottom=bottom, color=[c for *_, c in shown])
    else:
        ax.bar(positions, values, color=[c for *_, c in shown])
    for x, (_, value, p99, _) in zip(positions, shown):
        if p99 is not None:
            ax.plot([x - 0.3, x + 0.3], [p99, p99], color="black", linewidth=1)
        ax.annotate(label(value), (x, max(value, p99 or value)), ha="center", va="bottom", fontsize=7,
                    rotation=90 if crowded else 0)
    ax.set_xticks(list(positions))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def draw(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def g(section: str, name: str, field: str = "median") -> tuple:
        return _get(results, section, name, field)

    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    _panel(axes[0][0], "1. Sequential call, per call (log)", "s", [
        ("local add", g("sequential", "local_add"), LOCAL),
        ("raw echo", g("sequential", "raw_echo_add"), BASELINE),
        ("dill-echo", g("sequential", "dill_echo_add"), BASELINE),
        ("turbolift worker only", g("sequential", "worker_direct_add"), PARTIAL),
        ("socket ping-pong", g("sequential", "socket_pingpong_add"), BASELINE),
        ("sync stream", g("sequential", "stream_echo_add"), BASELINE),
        ("calling-thread stream", g("sequential", "thread_stream_echo_add"), BASELINE),
        ("aio stream", g("sequential", "aio_stream_echo_add"), BASELINE),
        ("aio unary", g("sequential", "aio_unary_echo_add"), BASELINE),
        ("turbolift add", g("sequential", "turbolift_add"), TURBOLIFT),
        ("Ray", g("peers", "ray_seq"), PEER),
        ("Dask", g("peers", "dask_seq"), PEER),
        ("execnet", g("peers", "execnet_seq"), PEER),
        ("rpyc", g("peers", "rpyc_seq"), PEER),
        ("Pyro5", g("peers", "pyro5_seq"), PEER),
        ("ProcessPool", g("peers", "process_pool_seq"), PEER),
        ("loky", g("peers", "loky_seq"), PEER),
    ], label=lambda v: fmt(v, "s"), log=True)
    axes[0][0].set_ylabel("seconds (log)", fontsize=8)
    _panel(axes[0][1], "2. Throughput", "calls/s", [
        ("raw echo 64", g("concurrency", "raw_echo_add_64_in_flight"), BASELINE),
        ("dill-echo 64", g("concurrency", "dill_echo_add_64_in_flight"), BASELINE),
        ("turbolift 64", g("concurrency", "turbolift_add_64_in_flight"), TURBOLIFT),
        ("ProcessPool 64", g("peers", "process_pool_64_in_flight"), PEER),
        ("loky 64", g("peers", "loky_64_in_flight"), PEER),
        ("raw burst", g("concurrency", "raw_echo_add_burst"), BASELINE),
        ("turbolift burst", g("concurrency", "turbolift_add_burst"), TURBOLIFT),
        ("Ray burst", g("peers", "ray_burst"), PEER),
        ("Dask burst", g("peers", "dask_burst"), PEER),
    ])
    _panel(axes[0][2], "3. map of a trivial function (log)", "items/s", [
        ("local map", g("map", "local_map_trivial"), LOCAL),
        ("raw batched", g("map", "raw_batched_map_trivial"), BASELINE),
        ("ProcessPool best chunks", g("map", "process_pool_map_trivial"), BASELINE),
        ("turbolift map", g("map", "turbolift_map_trivial"), TURBOLIFT),
        ("Ray", g("peers", "ray_map_trivial"), PEER),
        ("Ray batched", g("peers", "ray_map_batched"), PEER),
        ("Dask", g("peers", "dask_map_trivial"), PEER),
        ("Dask batched", g("peers", "dask_map_batched"), PEER),
    ], log=True)
    _panel(axes[1][0], "4. Cold start, start to exit", "s", label=lambda v: fmt(v, "s"), bars=[
        ("python app.py", g("cold_start", "plain_exit"), LOCAL),
        ("python -m turbolift", g("cold_start", "turbolift_exit"), TURBOLIFT),
        ("Ray script", g("peers", "ray_cold_exit"), PEER),
        ("Dask script", g("peers", "dask_cold_exit"), PEER),
    ])
    _panel(axes[1][1], "5. Importing many modules", "s", label=lambda v: fmt(v, "s"), bars=[
        ("without hook", g("import_hook", "without_hook_import"), BASELINE),
        ("with hook", g("import_hook", "with_hook_import"), TURBOLIFT),
    ])
    payload_bars = []
    for size in (100 * KB, MB, 10 * MB, 100 * MB, GB):
        key, label = size_key(size), size_label(size)
        for way, short in (("upload", "arg"), ("download", "result")):
            raw = g("payloads", f"raw_{way}_{key}", "mb_per_s")
            ours = g("payloads", f"turbolift_{way}_{key}", "mb_per_s")
            payload_bars += [(f"raw {label} {short}", raw, BASELINE),
                             (f"turbolift {label} {short}", ours, TURBOLIFT)]
    _panel(axes[1][2], "6. Payload transfer rate", "MB/s", payload_bars)
    fig.suptitle(f"turbolift benchmarks ({results.get('mode')} mode, {results.get('timestamp', '')}): "
                 "blue turbolift (light: worker side only), grey bare gRPC / socket, green in-process, "
                 "orange peers; "
                 "tick = p99",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
