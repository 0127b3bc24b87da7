"""5. Import-hook overhead.

A fresh interpreter (``python -m benchmarks.import_probe``) imports a large
set of standard-library and installed modules, none with marked functions,
with turbolift's ``sys.meta_path`` hook installed and distribution on (as
``python -m turbolift`` does) and without; the two variants alternate,
``mode.import_reps`` runs each after one discarded warm-up run of each.
The figure is the time the imports take inside the child
(``perf_counter``); the child's whole wall time, as seen from the suite,
is recorded too, and ``paired_ratio``: the ratio of each back-to-back
pair of runs, which drift in the machine's load affects less than the
ratio of medians. Installed modules that are missing here are left out of
both variants alike.
"""
from __future__ import annotations

import json
import sys

from ..baseline_server import REPO, child_env
from ..measure import Budget, summarise
from ..processes import timed_run

TITLE = "Import-hook overhead"

STDLIB = """
abc argparse array ast asyncio base64 bdb binascii bisect bz2 calendar cmd code codecs codeop
collections colorsys compileall concurrent.futures configparser contextlib contextvars copy csv
ctypes dataclasses datetime decimal difflib dis doctest email email.mime.multipart email.parser
enum filecmp fileinput fnmatch fractions ftplib functools getopt getpass gettext glob graphlib
gzip hashlib heapq hmac html html.parser http.client http.cookiejar http.server imaplib
importlib.metadata importlib.resources inspect io ipaddress itertools json logging
logging.handlers lzma mailbox mimetypes modulefinder multiprocessing netrc numbers operator
optparse pathlib pdb pickle pickletools pkgutil platform plistlib poplib pprint profile pstats
py_compile pydoc queue quopri random re reprlib rlcompleter sched secrets selectors shelve shlex
shutil smtplib socket socketserver sqlite3 ssl stat statistics string stringprep struct
subprocess symtable sysconfig tabnanny tarfile tempfile textwrap threading timeit token tokenize
tomllib trace traceback tracemalloc types typing unittest unittest.mock urllib.parse
urllib.request uuid warnings wave weakref webbrowser wsgiref.simple_server xml.dom.minidom
xml.etree.ElementTree xml.sax xmlrpc.client xmlrpc.server zipapp zipfile zipimport zoneinfo
""".split()

INSTALLED = """
grpc grpc_health.v1.health google.protobuf.descriptor_pool google.protobuf.json_format dill
importlib_metadata zipp numpy matplotlib matplotlib.pyplot
""".split()


def run(ctx) -> dict:
    mode = ctx.mode
    known = getattr(sys, "stdlib_module_names", None)  # Python 3.10+
    names = [name for name in STDLIB if known is None or _top(name) in known] + INSTALLED
    listing = ctx.tmp / "import-list.txt"
    listing.write_text("\n".join(names) + "\n")
    env = child_env()
    env["MPLBACKEND"] = "Agg"
    commands = {
        "without_hook": [sys.executable, "-m", "benchmarks.import_probe", str(listing)],
        "with_hook": [sys.executable, "-m", "benchmarks.import_probe", "--hook", str(listing)],
    }
    budget = Budget(mode.import_budget)
    inside: dict = {name: [] for name in commands}
    paired: list = []
    wall: dict = {name: [] for name in commands}
    failed: dict = {}
    added: dict = {}
    for rep in range(mode.import_reps + 1):
        pair = {}
        for name in (list(commands) if rep % 2 == 0 else list(commands)[::-1]):
            result = timed_run(commands[name], cwd=str(REPO), env=env, marker="{", timeout=120)
            report = json.loads(result.stdout.strip().splitlines()[-1])
            failed[name] = report["failed"]
            added[name] = report["modules_added"]
            pair[name] = report["import_s"]
            if rep:
                inside[name].append(report["import_s"])
                wall[name].append(result.exit)
        if rep:
            paired.append(pair["with_hook"] / pair["without_hook"])
        if rep and budget.expired():
            break
    if failed["with_hook"] != failed["without_hook"]:
        raise RuntimeError(f"the hook changed which modules import: {failed}")
    figures = {}
    for name in commands:
        figures[f"{name}_import"] = summarise(inside[name], "s")
        figures[f"{name}_process"] = summarise(wall[name], "s")
    figures["paired_ratio"] = summarise(paired, "x")
    figures["paired_ratio"]["note"] = "with ÷ without of back-to-back runs: less sensitive to drift in load"
    ctx.log(f"import hook: {figures['with_hook_import']['median'] * 1e3:.0f} ms with, "
            f"{figures['without_hook_import']['median'] * 1e3:.0f} ms without "
            f"({added['without_hook']} modules)")
    return {
        "figures": figures,
        "params": {"reps": mode.import_reps, "requested": len(names),
                   "not_importable_here": failed["without_hook"],
                   "modules_added_without_hook": added["without_hook"],
                   "modules_added_with_hook": added["with_hook"]},
        "notes": [],
    }


def _top(name: str) -> str:
    return name.partition(".")[0]
