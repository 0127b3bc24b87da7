"""The caller's cost of a big project's first call: building its bundle.

``python -m benchmarks.bundle_build [--sizes 1,50,500] [--reps 5] [--budget 60]``

For each size N a project of N generated modules (``proj/m000.py`` ...,
40-80 lines each, every one importing two or three lower-numbered siblings
and some of the standard library, so the import scan has real work) is
written to a temporary directory. Every figure is taken in a fresh process
(see :mod:`benchmarks.processes`), since the bundle cache is meant to help
across runs:

Module 0, every 20th and every 50th also import ``grpc`` or ``dill``, whose
distributions' versions the bundle pins.

* ``build cold``: the program's modules are imported (untimed), then
  ``module_bundle`` of the module holding the marked function is timed,
  with an empty bundle cache (``XDG_CACHE_HOME`` pointing at a new
  directory);
* ``build warm``: the same in a second process, with the cache the cold run
  left;
* ``import alone``: ``import proj.main`` timed in a plain ``python`` (no
  turbolift) that has imported ``grpc`` and ``dill`` already, as a worker
  has, with the ``.pyc`` files written: what a worker cannot avoid, running
  the project's modules, and so the floor of a first call;
* ``first call cold`` / ``warm``: ``python -m turbolift --workers 1 run.py``,
  where ``run.py`` imports the project and times its first (and only) call
  of the marked function with ``time.perf_counter``; the workers' cache is
  new for every run (the worker always receives the upload), the caller's
  bundle cache is empty (cold) or left by the previous run (warm);
* ``warm, no preload``: the warm first call with ``TURBOLIFT_PRELOAD=0``
  (the workers import the project at the first call, not once the program
  has imported it);
* ``after 1 s`` / ``after 1 s, no preload``: the warm first call of a
  program that works (sleeps) for a second between importing the project
  and calling into it, with and without preloading.

The programs run as a user's usually do: their imports write ``.pyc``
files (``PYTHONDONTWRITEBYTECODE`` is unset), which the bundle then ships
beside the sources, so a worker need not compile them.

Each row is the median of up to ``--reps`` repetitions, bounded by
``--budget`` seconds per size; the number of samples is printed. Cold and
warm builds must give the same bundle id, or the run fails.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from .baseline_server import child_env
from .measure import Budget, summarise
from .processes import timed_run

ROOT_MODULE = "proj.main"

MODULE = '''\
"""Module {i} of a generated project: a record type, helpers and a summary."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

{imports}

LIMIT_{i} = {i} * 3 + 1
NAMES_{i} = ("alpha", "beta", "gamma", "delta")


@dataclass
class Record{i}:
    """One measured item of module {i}."""
    name: str
    value: float
    tags: list = field(default_factory=list)

    def scaled(self, factor: float) -> float:
        return self.value * factor + LIMIT_{i}

    def as_json(self) -> str:
        return json.dumps({{"name": self.name, "value": self.value, "tags": self.tags}})


def helper_{i}(x: float) -> float:
    """A small computation that leans on its siblings."""
    total = math.sqrt(abs(x) + {i})
{calls}
    return total


def summarise_{i}(items: Iterable[float], cap: Optional[float] = None) -> dict:
    values = [helper_{i}(v) for v in items]
    if cap is not None:
        values = [min(v, cap) for v in values]
    if not values:
        return {{"count": 0}}
    return {{"count": len(values), "min": min(values), "max": max(values),
            "mean": sum(values) / len(values)}}


def records_{i}(count: int) -> list:
    out = []
    for index in range(count):
        name = NAMES_{i}[index % len(NAMES_{i})]
        out.append(Record{i}(name, float(index), [name[:1]]))
    return out
'''

MAIN = '''\
"""The generated project's entry point: the marked function."""
from turbolift import on

{imports}


@on()
def entry(x):
    return round({calls}, 6)
'''

RUN = '''\
import os, time

from proj.main import entry

time.sleep(float(os.environ.get("BENCH_THINK_SECONDS", "0")))   # the program's own work, if any
start = time.perf_counter()
value = entry(3)
print("result", time.perf_counter() - start, value, flush=True)
'''

# The child of an import measurement: the project's own cost of being imported.
IMPORT = '''\
import importlib, time
import grpc, dill  # noqa (a worker has them imported already)
start = time.perf_counter()
importlib.import_module({root!r})
print("result", time.perf_counter() - start, flush=True)
'''

# The child of a build measurement: import the program (untimed), time the bundle.
BUILD = '''\
import importlib, sys, time
importlib.import_module({root!r})
from turbolift._caller import bundling
start = time.perf_counter()
bundle = bundling.module_bundle({root!r})
elapsed = time.perf_counter() - start
print("result", elapsed, bundle.id, len(bundle.files), flush=True)
'''


def write_project(root: Path, count: int, seed: int = 1) -> Path:
    """``count`` modules ``proj/mNNN.py`` and ``proj/main.py`` importing them all (transitively)."""
    rng = random.Random(seed)
    package = root / "proj"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""A generated project."""\n')
    for i in range(count):
        siblings = sorted({i - 1, i - 2, rng.randrange(i)} - {-1, -2}) if i else []
        imports, calls = [], []
        for k, j in enumerate(siblings):
            style = (i + k) % 3
            if style == 0:
                imports.append(f"from . import m{j:03d}")
                calls.append(f"    total += m{j:03d}.LIMIT_{j} * 0.001")
            elif style == 1:
                imports.append(f"from .m{j:03d} import LIMIT_{j}, Record{j}")
                calls.append(f"    total += LIMIT_{j} * 0.001 + len(Record{j}.__name__)")
            else:
                imports.append(f"import proj.m{j:03d}")
                calls.append(f"    total += proj.m{j:03d}.LIMIT_{j} * 0.001")
        if i % 20 == 0:   # some third-party imports too: their versions are pinned
            imports.append("import grpc")
        if i % 50 == 7:
            imports.append("import dill  # noqa")
        (package / f"m{i:03d}.py").write_text(MODULE.format(
            i=i, imports="\n".join(imports) or "import os  # a leaf", calls="\n".join(calls) or "    pass"))
    tops = [i for i in range(count) if i >= count - 3]   # the last ones reach every other one
    (package / "main.py").write_text(MAIN.format(
        imports="\n".join(f"from .m{i:03d} import helper_{i}" for i in tops),
        calls=" + ".join(f"helper_{i}(x)" for i in tops)))
    (root / "run.py").write_text(RUN)
    past = time.time() - 3600   # edited an hour ago: files changed seconds ago are never trusted unread
    for path in root.rglob("*.py"):
        os.utime(path, (past, past))
    time.sleep(2.5)   # (nor are files whose ctime, which utime sets to now, is that recent)
    return root


def _env(project: Path, cache: Path, workers_cache: Path) -> dict:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(project), env["PYTHONPATH"]])
    env["XDG_CACHE_HOME"] = str(cache)
    env["TURBOLIFT_CACHE_DIR"] = str(workers_cache)
    env.pop("TURBOLIFT_BUNDLE_CACHE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)   # the program's imports write .pyc files, as a user's do
    return env


def _build(project: Path, cache: Path, scratch: Path) -> tuple:
    run = timed_run([sys.executable, "-c", BUILD.format(root=ROOT_MODULE)], cwd=str(project),
                    env=_env(project, cache, scratch / "workers"), timeout=300)
    _, seconds, bundle_id, files = run.stdout.split()[:4]
    return float(seconds), bundle_id, int(files)


def _import_alone(project: Path, scratch: Path) -> float:
    run = timed_run([sys.executable, "-c", IMPORT.format(root=ROOT_MODULE)], cwd=str(project),
                    env=_env(project, scratch / "import-cache", scratch / "workers"), timeout=300)
    return float(run.stdout.split()[1])


def _first_call(project: Path, cache: Path, workers_cache: Path, think: float = 0.0,
                preload: bool = True) -> float:
    env = _env(project, cache, workers_cache)
    env["BENCH_THINK_SECONDS"] = str(think)
    env["TURBOLIFT_PRELOAD"] = "1" if preload else "0"
    run = timed_run([sys.executable, "-m", "turbolift", "--workers", "1", "run.py"], cwd=str(project),
                    env=env, timeout=300)
    return float(run.stdout.split()[1])


def measure(count: int, reps: int, seconds: float, scratch: Path) -> dict:
    """Samples (seconds) of the four figures for a project of ``count`` modules."""
    project = write_project(scratch / f"project-{count}", count)
    budget = Budget(seconds)
    samples: dict = {"build cold": [], "build warm": [], "import alone": [], "first call cold": [],
                     "first call warm": [], "warm, no preload": [], "after 1 s": [],
                     "after 1 s, no preload": []}
    files = 0
    _build(project, scratch / "warm-up", scratch)   # file caches warm, pyc written: not counted
    for rep in range(reps):
        if rep and budget.expired():
            break
        cache = scratch / f"cache-{count}-{rep}"
        cold, cold_id, files = _build(project, cache, scratch)
        warm, warm_id, _ = _build(project, cache, scratch)
        if cold_id != warm_id:
            raise RuntimeError(f"{count} modules: a warm build gave {warm_id}, the cold one {cold_id}")
        samples["build cold"].append(cold)
        samples["build warm"].append(warm)
        samples["import alone"].append(_import_alone(project, scratch))
        cache = scratch / f"cache-call-{count}-{rep}"
        samples["first call cold"].append(_first_call(project, cache, scratch / f"w-{count}-{rep}-a"))
        samples["first call warm"].append(_first_call(project, cache, scratch / f"w-{count}-{rep}-b"))
        samples["warm, no preload"].append(_first_call(project, cache, scratch / f"w-{count}-{rep}-c",
                                                       preload=False))
        samples["after 1 s"].append(_first_call(project, cache, scratch / f"w-{count}-{rep}-d", think=1.0))
        samples["after 1 s, no preload"].append(_first_call(project, cache, scratch / f"w-{count}-{rep}-e",
                                                            think=1.0, preload=False))
    return {"files": files, **{name: summarise(values, "s") for name, values in samples.items()}}


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bundle_build",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,50,500", help="module counts, comma separated")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per size (at most)")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds per size (at most, roughly)")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    columns = ["build cold", "build warm", "import alone", "first call cold", "first call warm",
               "warm, no preload", "after 1 s", "after 1 s, no preload"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load:.2f}; "
          "medians in ms (n samples), each in a fresh process")
    print(f"{'modules':>8} {'files':>6} " + " ".join(f"{c:>21}" for c in columns))
    with tempfile.TemporaryDirectory(prefix="turbolift-bundle-bench-") as tmp:
        for size in sizes:
            figures = measure(size, args.reps, args.budget, Path(tmp))
            cells = [f"{1000 * figures[c]['median']:>10.1f} ({figures[c]['n']})" for c in columns]
            row = f"{size:>8} {figures['files']:>6} " + " ".join(f"{cell:>21}" for cell in cells)
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
