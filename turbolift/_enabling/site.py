"""Switching distribution on at interpreter start: the ``.pth`` hook.

``turbolift install-hook`` writes a ``.pth`` file whose one line costs a
single environment lookup when ``TURBOLIFT`` is unset, and otherwise calls
:func:`activate_if_requested`. Where ``.pth`` files are not wanted, the same
call can go in a ``sitecustomize.py``::

    import os
    if os.environ.get("TURBOLIFT", "0") not in ("", "0"):
        import turbolift._site
        turbolift._site.activate_if_requested()
"""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from . import config
from .switch import activate

PTH_NAME = "turbolift_hook.pth"
PTH_LINE = ("import os; os.environ.get('TURBOLIFT', '0') not in ('', '0') and "
            "__import__('turbolift._site', fromlist=['_']).activate_if_requested()\n")


def activate_if_requested() -> None:
    """Called at interpreter start by the ``.pth`` line when TURBOLIFT is set.

    Workers start lazily, at the first remote call, so that helper processes
    which inherit ``TURBOLIFT=1`` but call nothing remote start no workers.
    A configuration error is reported and the program runs locally rather
    than not at all.
    """
    try:
        activate(config.load(), eager=False)
    except Exception as exc:  # never break the interpreter's start
        print(f"turbolift: TURBOLIFT is set but distribution could not start: {exc}", file=sys.stderr)


def pth_path() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / PTH_NAME


def install_hook(print_only: bool) -> int:
    path = pth_path()
    if print_only:
        print(f"# would write {path}:")
        print(PTH_LINE, end="")
        return 0
    try:
        path.write_text(PTH_LINE)
    except OSError as exc:
        print(f"turbolift: cannot write {path}: {exc}. Use a virtual environment you own, or put the "
              "sitecustomize snippet from the README on your PYTHONPATH.", file=sys.stderr)
        return 1
    print(f"installed {path}\nrun any Python program with TURBOLIFT=1 to distribute its marked functions")
    return 0


def uninstall_hook() -> int:
    path = pth_path()
    try:
        path.unlink()
    except FileNotFoundError:
        print(f"nothing to remove: {path} does not exist")
        return 0
    print(f"removed {path}")
    return 0
