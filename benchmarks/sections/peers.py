"""7. Peers: Ray and Dask distributed, and the plain-RPC tools, when installed, in the same run.

Each peer is measured in a child process of its own
(:mod:`benchmarks.peer_runner`, after turbolift's cluster of this run has
been shut down, so the two never compete for the 2 cores): sequential
``add(1, 2)`` round trips, ``mode.peer_tasks`` tasks submitted then
gathered, ``inc`` mapped over ``mode.peer_map_items`` items, and ``burn``
(the same calibrated ~10 ms as section 3) over ``mode.peer_cpu_items``
items, whose speed-up is taken against the same loop run locally in the
peer's process right after (as section 3 does for turbolift), and
``<peer>_map_batched``: ``inc`` over section 3's ``mode.map_items`` items in
hand-made batches, one task per batch, the best median of the batch sizes
``BATCH_SIZES`` (each also as ``<peer>_map_batched_b<size>``). Cold start
runs a generated script (start the peer's local cluster, one call,
print, shut down) as a fresh process, timed like section 4, against
section 4's ``python app.py``.

The plain-RPC peers (execnet, rpyc, Pyro5, ``ProcessPoolExecutor``, loky)
are measured each in a child process too (:mod:`benchmarks.rpc_peers`):
``<peer>_seq``, seconds per sequential ``add(1, 2)`` round trip; for the
two process pools also ``<peer>_64_in_flight`` (calls/s of a sliding
window of ``mode.in_flight`` futures, as section 2) and its per-call
latency; ``<peer>_start`` / ``<peer>_stop``, setting up and tearing down.

Everything stays on 127.0.0.1 or unix sockets: Ray with ``_node_ip_address="127.0.0.1"``
and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (without it Ray binds the
machine's external address), usage statistics off; Dask with
``host="127.0.0.1"`` and no dashboard.
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys

from ..baseline_server import REPO, child_env
from ..measure import Budget, rate_summary, summarise
from ..processes import timed_run
from . import Skip
from .cold_start import write_app
from .map_throughput import calibrate

TITLE = "Peers (Ray, Dask, execnet, rpyc, Pyro5, process pools)"

PEERS = {"ray": "ray", "dask": "distributed"}
BATCH_SIZES = (5000, 20000, 50000)   # hand-made batches of section 3's items, one task each
RPC_PEERS = {"execnet": "execnet", "rpyc": "rpyc", "pyro5": "Pyro5", "process_pool": "concurrent.futures",
             "loky": "loky"}

APPS = {
    "ray": '''
        """Cold-start probe for Ray: start, one task, shut down."""
        import ray


        @ray.remote
        def add(a, b):
            return a + b


        if __name__ == "__main__":
            ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, logging_level="warning")
            print("result", ray.get(add.remote(1, 2)), flush=True)
            ray.shutdown()
    ''',
    "dask": '''
        """Cold-start probe for Dask: start a LocalCluster, one task, close."""
        from dask.distributed import Client, LocalCluster


        def add(a, b):
            return a + b


        if __name__ == "__main__":
            with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                              host="127.0.0.1") as cluster, Client(cluster) as client:
                print("result", client.submit(add, 1, 2).result(), flush=True)
    ''',
}


def peer_env() -> dict:
    env = child_env()
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               RAY_DISABLE_DOCKER_CPU_WARNING="1", MPLBACKEND="Agg")
    return env


def installed() -> dict:
    """``{peer: True/False}``: importable in this interpreter (Ray, Dask, then the plain-RPC peers)."""
    return {peer: importlib.util.find_spec(module) is not None
            for peer, module in {**PEERS, **RPC_PEERS}.items()}


def run(ctx) -> dict:
    mode = ctx.mode
    available = installed()
    if not any(available.values()):
        raise Skip("not installed (pip install -r benchmarks/requirements-peers.txt)")
    burn_n = _burn_size(ctx)
    figures: dict = {}
    status: dict = {}
    for peer, ok in available.items():
        if not ok:
            status[peer] = "skipped: not installed"
            continue
        try:
            measured = _measure_rpc_peer(ctx, peer) if peer in RPC_PEERS else _measure_peer(ctx, peer, burn_n)
            figures.update(measured)
            status[peer] = "ok"
        except Exception as exc:  # one peer failing must not hide the other
            status[peer] = f"error: {type(exc).__name__}: {exc}"[:2000]
            ctx.log(f"peers: {peer} failed: {exc}")
    if not figures:
        raise RuntimeError("every installed peer failed: " + json.dumps(status))
    return {
        "figures": figures,
        "params": {"status": status, "tasks": mode.peer_tasks, "seq_calls": mode.peer_seq_calls,
                   "map_items": mode.peer_map_items, "cpu_items": mode.peer_cpu_items, "burn_n": burn_n,
                   "cold_reps": mode.peer_cold_reps, "workers": 2, "in_flight": mode.in_flight,
                   "rpc_peer_budget": mode.rpc_peer_budget, "rpc_calls_per_rep": mode.conc_calls},
        "notes": [f"{peer}: {state}" for peer, state in status.items() if state != "ok"]
        + ["peer cold starts have no discarded warm-up run: the peer's own measurement, run just "
           "before in a child process, has warmed the file caches"],
    }


def _burn_size(ctx) -> int:
    """Section 3's calibrated ``burn`` size (or calibrate now, if section 3 did not run)."""
    try:
        return int(ctx.results["map"]["params"]["burn_n"])
    except (KeyError, TypeError):
        return calibrate(ctx.mode.cpu_ms / 1000.0)


def _raw_samples(ctx, peer: str, runner: str, params: dict) -> dict:
    """The raw samples ``python -m RUNNER PEER PARAMS.json`` prints as its last line (a JSON object),
    measured in a child process bounded by ``params["budget"]`` and two minutes more."""
    params_file = ctx.tmp / f"{peer}-params.json"
    params_file.write_text(json.dumps(params))
    ctx.log(f"peers: measuring {peer} ...")
    result = timed_run([sys.executable, "-m", runner, peer, str(params_file)],
                       cwd=str(REPO), env=peer_env(), marker="{", timeout=params["budget"] + 120)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _measure_peer(ctx, peer: str, burn_n: int) -> dict:
    mode = ctx.mode
    raw = _raw_samples(ctx, peer, "benchmarks.peer_runner", {
        "seq_calls": mode.peer_seq_calls, "tasks": mode.peer_tasks, "reps": mode.peer_reps,
        "map_items": mode.peer_map_items, "cpu_items": mode.peer_cpu_items, "burn_n": burn_n,
        "budget": mode.peer_budget, "batch_items": mode.map_items, "batch_sizes": list(BATCH_SIZES)})
    figures = {
        f"{peer}_seq": summarise(raw["seq"], "s"),
        f"{peer}_burst": rate_summary(raw["burst"], "calls/s"),
        f"{peer}_map_trivial": rate_summary(raw["map"], "items/s"),
        f"{peer}_map_cpu": summarise(raw["cpu"], "s"),
        f"{peer}_map_cpu_local": summarise(raw["cpu_local"], "s"),
        f"{peer}_map_cpu_speedup": summarise(
            [statistics.median(raw["cpu_local"]) / seconds for seconds in raw["cpu"]], "x"),
        f"{peer}_start": summarise([raw["start_s"]], "s"),
        f"{peer}_stop": summarise([raw["stop_s"]], "s"),
    }
    figures[f"{peer}_seq"]["version"] = raw["version"]
    figures.update(_batched_figures(peer, raw["map_batched"]))

    folder = ctx.tmp / f"cold-{peer}"
    app = write_app(folder, f"{peer}_app.py", APPS[peer])
    budget = Budget(mode.peer_budget)
    first, exits = [], []
    for _ in range(mode.peer_cold_reps):
        run_ = timed_run([sys.executable, str(app)], cwd=str(folder), env=peer_env(), timeout=180)
        if "result 3" not in run_.stdout:
            raise RuntimeError(f"{peer} app printed {run_.stdout!r}, not the result")
        first.append(run_.first_result)
        exits.append(run_.exit)
        if budget.expired():
            break
    figures[f"{peer}_cold_first_result"] = summarise(first, "s")
    figures[f"{peer}_cold_exit"] = summarise(exits, "s")
    ctx.log(f"peers: {peer} seq {figures[f'{peer}_seq']['median'] * 1e3:.2f} ms, burst "
            f"{figures[f'{peer}_burst']['median']:,.0f}/s, map "
            f"{figures[f'{peer}_map_trivial']['median']:,.0f} items/s, "
            f"cold exit {figures[f'{peer}_cold_exit']['median']:.2f}s")
    return figures


def _batched_figures(peer: str, runs_by_size: dict) -> dict:
    """``<peer>_map_batched_b<size>`` per batch size, and ``<peer>_map_batched``: the best median."""
    figures = {f"{peer}_map_batched_b{size}": rate_summary(runs, "items/s")
               for size, runs in runs_by_size.items()}
    size = max(runs_by_size, key=lambda s: figures[f"{peer}_map_batched_b{s}"]["median"])
    best = dict(figures[f"{peer}_map_batched_b{size}"], batch=int(size))
    best["note"] = f"batches of {size} items: the best median of {', '.join(runs_by_size)}"
    figures[f"{peer}_map_batched"] = best
    return figures


def _measure_rpc_peer(ctx, peer: str) -> dict:
    """One plain-RPC peer in a child process (:mod:`benchmarks.rpc_peers`): its figures."""
    mode = ctx.mode
    raw = _raw_samples(ctx, peer, "benchmarks.rpc_peers", {
        "seq_calls": mode.peer_seq_calls, "tasks": mode.conc_calls, "reps": mode.peer_reps,
        "in_flight": mode.in_flight, "workers": mode.workers, "budget": mode.rpc_peer_budget})
    figures = {f"{peer}_seq": summarise(raw["seq"], "s"),
               f"{peer}_start": summarise([raw["start_s"]], "s"),
               f"{peer}_stop": summarise([raw["stop_s"]], "s")}
    figures[f"{peer}_seq"]["version"] = raw["version"]
    if raw["in_flight"]:
        figures[f"{peer}_{mode.in_flight}_in_flight"] = rate_summary(raw["in_flight"], "calls/s")
        figures[f"{peer}_{mode.in_flight}_in_flight_latency"] = summarise(raw["latency"], "s")
    window = figures.get(f"{peer}_{mode.in_flight}_in_flight")
    ctx.log(f"peers: {peer} seq {figures[f'{peer}_seq']['median'] * 1e3:.3f} ms"
            + (f", {mode.in_flight} in flight {window['median']:,.0f}/s" if window else ""))
    return figures
