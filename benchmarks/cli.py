"""``python -m benchmarks [--quick] [--peers | --no-peers] [--out DIR] [--only SECTION ...]``.

Runs the sections in this order: the in-process ones (1 sequential,
2 concurrency, 3 map, 6 payloads) against a turbolift cluster and the
baseline servers started side by side; then, with those shut down, the
ones that time fresh processes (4 cold start, 5 import hook) and the peers
(7). A section that fails is recorded as an error and the others still
run; the exit code is 1 if any did. Writes ``latest.json``, ``latest.md``
and ``latest.png`` into ``--out`` (default ``benchmarks/results``).

Peers (Ray, Dask, execnet, rpyc, Pyro5, loky where installed, and
``ProcessPoolExecutor``) run in full mode (``--no-peers`` turns them off);
quick mode skips them unless ``--peers`` is given.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

from . import machine, report, targets
from .sections import (
    Context,
    Skip,
    cold_start,
    concurrency,
    import_hook,
    map_throughput,
    payloads,
    peers,
    sequential,
)
from .settings import FULL, QUICK

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
IN_PROCESS = (("sequential", sequential), ("concurrency", concurrency), ("map", map_throughput),
              ("payloads", payloads))
SUBPROCESS = (("cold_start", cold_start), ("import_hook", import_hook))
ALL = [name for name, _ in IN_PROCESS + SUBPROCESS] + ["peers"]


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _run_section(ctx: Context, name: str, module) -> dict:
    _log(f"section {name}: {module.TITLE} ...")
    began = time.perf_counter()
    try:
        outcome = module.run(ctx)
        section = {"title": module.TITLE, "status": "ok", **outcome}
    except Skip as skip:
        section = {"title": module.TITLE, "status": "skipped", "reason": str(skip)}
        _log(f"section {name} skipped: {skip}")
    except Exception as exc:
        section = {"title": module.TITLE, "status": "error", "reason": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()}
        _log(f"section {name} FAILED: {type(exc).__name__}: {exc}")
    section["seconds"] = time.perf_counter() - began
    ctx.results[name] = section
    return section


def _clean(value):
    """JSON has no NaN: write missing numbers as null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def run(mode, with_peers: bool, only: Optional[list] = None) -> dict:
    from . import harness

    chosen = set(only or ALL)
    started = time.perf_counter()
    results: dict = {
        "suite": "turbolift benchmarks (issue 4)",
        "mode": mode.name,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "versions": machine.versions(),
        "settings": {k: v for k, v in vars(mode).items()},
        "sections": {},
    }
    results["machine"]["load_average_start"] = results["machine"].pop("load_average")
    with tempfile.TemporaryDirectory(prefix="turbolift-bench-") as tmp:
        ctx = Context(mode=mode, tmp=Path(tmp), log=_log, results=results["sections"])
        wanted = [(name, module) for name, module in IN_PROCESS if name in chosen]
        if wanted:
            try:
                with harness.contenders(mode, Path(tmp), _log) as contenders:
                    ctx.contenders = contenders
                    results["startup"] = contenders.startup
                    for name, module in wanted:
                        _run_section(ctx, name, module)
            except Exception as exc:  # the cluster or the baseline did not start
                for name, module in wanted:
                    if name not in results["sections"]:
                        results["sections"][name] = {
                            "title": module.TITLE, "status": "error", "seconds": 0.0,
                            "reason": f"contenders did not start: {type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc()}
                _log(f"in-process sections FAILED: {exc}")
            ctx.contenders = None
        for name, module in SUBPROCESS:
            if name in chosen:
                _run_section(ctx, name, module)
        if "peers" in chosen:
            if with_peers:
                _run_section(ctx, "peers", peers)
            else:
                results["sections"]["peers"] = {
                    "title": peers.TITLE, "status": "skipped", "seconds": 0.0,
                    "reason": "quick mode (add --peers to include them)" if mode.name == "quick"
                    else "turned off with --no-peers"}
    results["machine"]["load_average_end"] = machine.describe()["load_average"]
    results["duration_s"] = time.perf_counter() - started
    results["comparisons"] = targets.evaluate(results)
    return _clean(results)


def write(results: dict, out: Path) -> dict:
    """Write latest.json, latest.md and latest.png into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "latest.json", "md": out / "latest.md", "png": out / "latest.png"}
    for kind, text in (("json", json.dumps(results, indent=1, sort_keys=False) + "\n"),
                       ("md", report.render(results) + "\n")):
        temporary = paths[kind].with_suffix(paths[kind].suffix + ".tmp")
        temporary.write_text(text)
        os.replace(temporary, paths[kind])
    try:
        from . import chart

        chart.draw(results, paths["png"])
    except ImportError as exc:
        _log(f"no chart: {exc} (pip install matplotlib)")
        paths.pop("png")
    return paths


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="the smoke-test run (well under a minute)")
    peers_group = parser.add_mutually_exclusive_group()
    peers_group.add_argument("--peers", action="store_true", help="measure the peers even in quick mode")
    peers_group.add_argument("--no-peers", action="store_true", help="do not measure the peers")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory ({DEFAULT_OUT})")
    parser.add_argument("--only", nargs="+", choices=ALL, metavar="SECTION",
                        help=f"run only these sections: {', '.join(ALL)}")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    with_peers = args.peers or (mode.peers and not args.no_peers)
    results = run(mode, with_peers, args.only)
    paths = write(results, args.out)
    _log(f"done in {results['duration_s']:.0f}s: " + ", ".join(str(p) for p in paths.values()))
    print(report.summary_table(results["comparisons"]))
    failed = [name for name, section in results["sections"].items() if section["status"] == "error"]
    if failed:
        _log(f"sections that failed: {', '.join(failed)}")
        return 1
    return 0
