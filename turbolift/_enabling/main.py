"""Running the main program (a script or ``-m`` module) as plain ``python`` would."""
from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from typing import Optional

from ..errors import ConfigurationError
from . import hook


def verify_remote_modules() -> None:
    """Fail at start, not silently, when a ``--remote`` module does not exist.

    Called once ``sys.path`` is what the program will see. A missing
    function inside an existing module is reported when the module is
    imported (finding it would mean running the module early).
    """
    finder = hook.installed()
    if finder is None:
        return
    for module_name in finder.remote:
        if module_name == "__main__":
            raise ConfigurationError("--remote __main__:... is not supported: mark functions of the "
                                     "main script with @turbolift.on, or move them into a module")
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ConfigurationError(f"--remote {module_name}:...: no module named {module_name!r} "
                                     "can be imported from here; check the name and sys.path")


def prepare_main(script: Optional[str], module: Optional[str], argv: list[str]) -> None:
    """Give the program the ``sys.argv`` and ``sys.path[0]`` plain ``python`` would.

    Raises ConfigurationError for a missing script or ``--remote`` module.
    """
    if script is not None:
        if not os.path.exists(script):
            raise ConfigurationError(f"no such script: {script}")
        sys.argv = [script, *argv]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
    else:
        sys.argv = [str(module), *argv]
        sys.path[0] = os.getcwd()
    verify_remote_modules()


def run_main(script: Optional[str], module: Optional[str]) -> None:
    """Run the prepared script or module as ``__main__``."""
    if script is not None:
        runpy.run_path(script, run_name="__main__")
    else:
        runpy.run_module(str(module), run_name="__main__", alter_sys=True)
