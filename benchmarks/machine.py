"""What the figures were measured on: the machine and the versions involved."""
from __future__ import annotations

import os
import platform
import sys

from . import memory

DISTRIBUTIONS = ("grpcio", "protobuf", "dill", "matplotlib", "ray", "dask", "distributed", "execnet", "rpyc",
                 "Pyro5", "loky")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _total_memory() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _load() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def describe() -> dict:
    """Machine facts; the load average shows how quiet the machine was."""
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total_bytes": _total_memory(),
        "memory_available_bytes": memory.available_bytes(),
        "load_average": _load(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


def versions() -> dict:
    """Versions of turbolift and the distributions it is compared with or through."""
    import importlib_metadata

    import turbolift

    found = {"turbolift": turbolift.__version__, "python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            found[name] = None
    return found
