"""4. Cold start: a whole program, start to first remote result and to exit.

A small generated ``app.py`` (one marked ``add``, one call, print, exit) is
run as ``python -m turbolift --workers N app.py`` (workers started, awaited,
the call sent, the cluster torn down) and as ``python app.py`` (all local),
alternately, each as a fresh process timed from the suite (see
:mod:`benchmarks.processes`). The bundle cache directory persists across
the runs, as it does on a developer's machine; the very first turbolift run
(empty cache, cold file caches) is recorded apart as ``turbolift_first_run``
and, like the plain warm-up run, left out of the statistics.
``turbolift_added_exit`` is the per-pair difference (turbolift - plain) of
time to exit.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from ..baseline_server import child_env
from ..measure import Budget, summarise
from ..processes import timed_run

TITLE = "Cold start"

APP = '''
"""Cold-start probe: one call of a marked function, then exit."""
from turbolift import on


@on()
def add(a, b):
    return a + b


print("result", add(1, 2), flush=True)
'''


def write_app(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def run(ctx) -> dict:
    mode = ctx.mode
    folder = ctx.tmp / "cold-start"
    app = write_app(folder, "app.py", APP)
    env = child_env()
    env["TURBOLIFT_CACHE_DIR"] = str(ctx.tmp / "cold-start-cache")
    # Bytecode is cached, as for anyone who installed the package: with PYTHONDONTWRITEBYTECODE
    # (set on some machines, this sandbox's among them) an editable install compiles every module
    # of turbolift from source at each start, a quarter of the start-up measured.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    commands = {
        "plain": [sys.executable, str(app)],
        "turbolift": [sys.executable, "-m", "turbolift", "--workers", str(mode.workers), str(app)],
    }
    budget = Budget(mode.cold_budget)
    samples: dict = {f"{name}_{what}": [] for name in commands for what in ("first_result", "exit")}
    added: list = []
    first_run = None
    for rep in range(mode.cold_reps + 1):
        pair = {}
        for name in (list(commands) if rep % 2 == 0 else list(commands)[::-1]):
            run_ = timed_run(commands[name], cwd=str(folder), env=env, timeout=120)
            if "result 3" not in run_.stdout:
                raise RuntimeError(f"{name} app printed {run_.stdout!r}, not the result")
            pair[name] = run_
        if rep == 0:
            first_run = pair["turbolift"]
            continue
        for name, run_ in pair.items():
            samples[f"{name}_first_result"].append(run_.first_result)
            samples[f"{name}_exit"].append(run_.exit)
        added.append(pair["turbolift"].exit - pair["plain"].exit)
        if budget.expired():  # (rep 0, the warm-up, never gets here)
            break
    figures = {name: summarise(values, "s") for name, values in samples.items()}
    figures["turbolift_added_exit"] = summarise(added, "s")
    assert first_run is not None
    figures["turbolift_first_run_exit"] = summarise([first_run.exit], "s")
    figures["turbolift_first_run_exit"]["note"] = "empty bundle cache; not in the statistics"
    ctx.log(f"cold start: turbolift exit {figures['turbolift_exit']['median']:.2f}s, plain "
            f"{figures['plain_exit']['median']:.2f}s, added {figures['turbolift_added_exit']['median']:.2f}s")
    return {
        "figures": figures,
        "params": {"reps": mode.cold_reps, "workers": mode.workers, "commands": {
            name: " ".join(["python", *command[1:-1], "app.py"]) for name, command in commands.items()}},
        "notes": [],
    }
