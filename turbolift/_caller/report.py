"""``turbolift bundle``: what a module or script would ship, without running it remotely."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..errors import TurboliftError
from .bundling import bundle_for_module, bundle_for_script, describe


def main(argv: Sequence[str]) -> int:
    """``turbolift bundle SCRIPT | -m MODULE [--json]``."""
    parser = argparse.ArgumentParser(prog="turbolift bundle",
                                     description="Show the bundle a module or script would ship.")
    parser.add_argument("script", nargs="?", help="a script: its imports are shipped (it is not run)")
    parser.add_argument("-m", dest="module", help="a module: shipped as workers receive it")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    opts = parser.parse_args(list(argv))
    if (opts.script is None) == (opts.module is None):
        parser.error("give exactly one of SCRIPT or -m MODULE")
    try:
        if opts.module:
            sys.path.insert(0, str(Path.cwd()))
            bundle = bundle_for_module(opts.module)
        else:
            if not Path(opts.script).is_file():
                raise TurboliftError(f"no such script: {opts.script}")
            sys.path.insert(0, str(Path(opts.script).resolve().parent))
            bundle = bundle_for_script(opts.script)
    except (TurboliftError, ImportError) as exc:
        print(f"turbolift bundle: {exc}", file=sys.stderr)
        return 2
    report = describe(bundle)
    if opts.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"bundle {report['id']}  ({report['size']:,} bytes zipped)")
    print(f"python {report['python']} ({report['implementation']})")
    print("files:")
    for name, size in report["files"]:
        print(f"  {size:>10,}  {name}")
    print("pinned requirements:" if report["requirements"] else "pinned requirements: none")
    for dist, version in report["requirements"].items():
        print(f"  {dist}=={version}")
    return 0
