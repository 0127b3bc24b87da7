"""Child process of section 7: measure one peer (Ray or Dask) in isolation.

``python -m benchmarks.peer_runner {ray|dask} PARAMS.json`` starts the
peer's local cluster on 127.0.0.1 with two single-threaded workers, runs
the same workloads as turbolift (:mod:`benchmarks.workloads`, imported by
reference by the peer's workers), and prints one JSON line of raw samples:

* ``start_s`` / ``stop_s``: ``ray.init`` / ``LocalCluster + Client`` start and shutdown;
* ``seq``: seconds of each sequential ``add(1, 2)`` round trip
  (``ray.get(add.remote(1, 2))``, ``client.submit(add, 1, 2).result()``);
* ``burst``: ``[count, seconds]`` per repetition of ``tasks`` calls
  submitted at once and gathered;
* ``map``: ``[count, seconds]`` per repetition of ``inc`` over ``map_items``
  items, one task per item (the idiomatic form for both peers);
* ``cpu``: seconds per repetition of ``burn(burn_n)`` over ``cpu_items`` items,
  and ``cpu_local``: the same loop run right after in this process, for a
  speed-up measured under the same conditions.
* ``map_batched``: ``{batch size: [[count, seconds], ...]}``: ``inc`` over
  ``batch_items`` items (section 3's count) in hand-made batches, one task of
  ``inc_batch`` per batch of each size in ``batch_sizes``, submitted at once
  and gathered, the results flattened in order (slicing the items counted:
  turbolift's ``map`` does its own batching).

Warm-up calls are made first and discarded. Every loop is bounded by its
count and by the ``budget`` in seconds.
"""
from __future__ import annotations

import json
import sys
import time

from . import workloads
from .measure import Budget, time_calls


def _ray(params: dict) -> dict:
    import ray

    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             logging_level="warning")
    start_s = time.perf_counter() - began
    add, inc, burn = (ray.remote(workloads.add), ray.remote(workloads.inc), ray.remote(workloads.burn))

    def burst(count: int) -> list:
        return ray.get([add.remote(1, 2) for _ in range(count)])

    def mapped(count: int) -> list:
        return ray.get([inc.remote(x) for x in range(count)])

    def cpu(n: int, count: int) -> list:
        return ray.get([burn.remote(n) for _ in range(count)])

    out = _measure(params, lambda: ray.get(add.remote(1, 2)), burst, mapped, cpu)
    inc_batch = ray.remote(workloads.inc_batch)
    out["map_batched"] = _batched(params, lambda chunk: inc_batch.remote(chunk), ray.get)
    began = time.perf_counter()
    ray.shutdown()
    out.update(start_s=start_s, stop_s=time.perf_counter() - began, version=ray.__version__)
    return out


def _dask(params: dict) -> dict:
    import distributed
    from dask.distributed import Client, LocalCluster

    began = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           host="127.0.0.1")
    client = Client(cluster)
    start_s = time.perf_counter() - began

    def burst(count: int) -> list:
        return client.gather([client.submit(workloads.add, 1, 2, pure=False) for _ in range(count)])

    def mapped(count: int) -> list:
        return client.gather(client.map(workloads.inc, range(count), pure=False))

    def cpu(n: int, count: int) -> list:
        return client.gather(client.map(workloads.burn, [n] * count, pure=False))

    out = _measure(params, lambda: client.submit(workloads.add, 1, 2, pure=False).result(),
                   burst, mapped, cpu)
    out["map_batched"] = _batched(params, lambda chunk: client.submit(workloads.inc_batch, chunk, pure=False),
                                  client.gather)
    began = time.perf_counter()
    client.close()
    cluster.close()
    out.update(start_s=start_s, stop_s=time.perf_counter() - began, version=distributed.__version__)
    return out


def _measure(params: dict, one_call, burst, mapped, cpu) -> dict:
    budget = Budget(params["budget"])
    for _ in range(20):
        one_call()
    burst(min(200, params["tasks"]))
    seq = time_calls(one_call, params["seq_calls"], budget)

    def repeat(action, count: int, check) -> list:
        runs = []
        for _ in range(params["reps"]):
            if runs and budget.expired():
                break
            began = time.perf_counter()
            values = action(count)
            runs.append([count, time.perf_counter() - began])
            check(values, count)
        return runs

    def all_three(values: list, count: int) -> None:
        if len(values) != count or any(v != 3 for v in values):
            raise RuntimeError("wrong results from add")

    def in_order(values: list, count: int) -> None:
        if list(values) != list(range(1, count + 1)):
            raise RuntimeError("wrong or unordered results from inc")

    bursts = repeat(burst, params["tasks"], all_three)
    maps = repeat(mapped, params["map_items"], in_order)
    n = params["burn_n"]
    expected = workloads.burn(n)
    cpu_runs, local_runs = [], []
    cpu(n, 4)  # warm-up
    for _ in range(max(1, params["reps"] - 1)):
        if budget.expired() and cpu_runs:
            break
        began = time.perf_counter()
        values = cpu(n, params["cpu_items"])
        cpu_runs.append(time.perf_counter() - began)
        if list(values) != [expected] * params["cpu_items"]:
            raise RuntimeError("wrong results from burn")
        began = time.perf_counter()
        for _ in range(params["cpu_items"]):
            workloads.burn(n)
        local_runs.append(time.perf_counter() - began)
    return {"seq": seq, "burst": bursts, "map": maps, "cpu": cpu_runs, "cpu_local": local_runs}


def _batched(params: dict, submit, gather) -> dict:
    """``{size: [[count, seconds], ...]}`` of ``inc`` over ``batch_items`` items in batches of ``size``."""
    budget = Budget(params["budget"] / 2)
    items = list(range(params["batch_items"]))
    found: dict = {}
    for size in params["batch_sizes"]:
        runs: list = []
        for rep in range(params["reps"] + 1):  # repetition 0 is the warm-up
            began = time.perf_counter()
            parts = gather([submit(items[i:i + size]) for i in range(0, len(items), size)])
            values = [value for part in parts for value in part]
            seconds = time.perf_counter() - began
            if values != [x + 1 for x in items]:
                raise RuntimeError(f"wrong or unordered results from inc_batch (batches of {size})")
            if rep:
                runs.append([len(items), seconds])
            if rep and budget.expired():
                break
        found[str(size)] = runs
    return found


def main(argv: list) -> int:
    peer, params_file = argv
    with open(params_file) as handle:
        params = json.load(handle)
    result = {"ray": _ray, "dask": _dask}[peer](params)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
