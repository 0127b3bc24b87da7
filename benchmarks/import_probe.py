"""Child process of section 5: import many modules, report how long it took.

``python -m benchmarks.import_probe [--hook] LISTFILE`` imports turbolift's
hook and runtime modules (outside the timed region, in both variants), installs the import hook as
``python -m turbolift`` does (``turbolift._enabling.switch.enable()``,
which installs the import hook) when ``--hook`` is given, then imports
every module named in LISTFILE (one per line) and prints one JSON line:
the import time (``perf_counter``), the modules that failed to import, and
how many modules the imports added to ``sys.modules``.
"""
from __future__ import annotations

import json
import sys
import time


def main(argv: list) -> int:
    hook = "--hook" in argv
    names = [line.strip() for line in open(argv[-1]) if line.strip()]
    # Both variants import the same turbolift modules before timing; only
    # installing the hook and switching distribution on differ.
    from turbolift._enabling import switch

    if hook:
        switch.enable()
    before = len(sys.modules)
    failed = []
    clock = time.perf_counter
    started = clock()
    for name in names:
        try:
            __import__(name)
        except Exception:  # an optional module missing here: same in both variants
            failed.append(name)
    seconds = clock() - started
    print(json.dumps({"import_s": seconds, "failed": failed, "modules_added": len(sys.modules) - before,
                      "hook": hook}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
