"""The worker's side of pinned environments.

A bundle's manifest pins the caller's Python (major.minor, implementation)
and the exact versions of the third-party distributions its code imports.
A worker either matches them or, with ``--install-requirements``, installs
the pinned versions with pip into a private directory keyed by the
requirement set (``<cache>/envs/<key>``), shared by every bundle with the
same set, never touching the worker's own environment.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

import importlib_metadata

from .._wire.bundle_format import python_tag
from ..errors import EnvironmentMismatch


def installed_version(dist: str, paths: Sequence[str]) -> Optional[str]:
    """The version of ``dist`` first found on ``paths``, or None."""
    for found in importlib_metadata.distributions(name=dist, path=list(paths)):
        return found.version
    return None


def differences(manifest: dict, paths: Sequence[str]) -> list[tuple[str, str, str]]:
    """(what, wanted, found) for each way ``paths`` differ from ``manifest``."""
    found_here = python_tag()
    result = []
    for key in ("implementation", "python"):
        if manifest.get(key) != found_here[key]:
            result.append((key, str(manifest.get(key)), found_here[key]))
    for dist, wanted in sorted(manifest.get("requirements", {}).items()):
        found = installed_version(dist, paths) or "not installed"
        if found != wanted:
            result.append((dist, wanted, found))
    return result


def mismatch(found: list[tuple[str, str, str]], can_install: bool) -> EnvironmentMismatch:
    listing = "; ".join(f"{what}: wanted {wanted}, found {have}" for what, wanted, have in found)
    advice = ("pip could not install the pinned versions; see the worker's log" if can_install else
              "install the same versions on the worker, or start it with --install-requirements")
    return EnvironmentMismatch(f"the worker's environment differs from the caller's: {listing}. "
                               f"{advice.capitalize()}.", found)


def top_level_names(directory: str) -> set[str]:
    """Import names provided by the distributions installed in ``directory``."""
    names = set()
    for dist in importlib_metadata.distributions(path=[directory]):
        listed = dist.read_text("top_level.txt")
        if listed:
            names.update(line.strip() for line in listed.splitlines() if line.strip())
            continue
        for file in dist.files or ():
            top = str(file).split("/", 1)[0]
            if top.endswith(".py"):
                names.add(top[:-3])
            elif not top.endswith((".dist-info", ".data")) and top not in ("..", "bin"):
                names.add(top)
    return names


def ensure_environment(cache_root: str, requirements: dict[str, str]) -> str:
    """The directory holding ``requirements`` installed by pip (installing once)."""
    lines = sorted(f"{dist}=={version}" for dist, version in requirements.items())
    key = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:24]
    envs = os.path.join(cache_root, "envs")
    target = os.path.join(envs, key)
    if os.path.isdir(target):
        return target
    os.makedirs(envs, exist_ok=True)
    staging = tempfile.mkdtemp(dir=envs, prefix=".installing-")
    try:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--no-warn-script-location", "--target", staging, *lines]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise EnvironmentMismatch(
                f"pip could not install the pinned requirements {', '.join(lines)}: "
                f"{completed.stderr.strip()[-2000:]}", [])
        try:
            os.rename(staging, target)
        except OSError:  # another worker sharing the cache installed it first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
