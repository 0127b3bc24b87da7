"""The bundle format both sides agree on.

A bundle is a zip archive named by its sha256 (``sha256:<hex>``) that holds
the shipped source files, beside them in ``__pycache__`` the caller's
bytecode of those it has (checked against them when imported:
:mod:`turbolift._caller.bytecode`), and ``__turbolift__/manifest.json``: the
format number, the caller's Python (major.minor, implementation), the
shipped modules, the pinned third-party distributions, the installed
modules used by reference, the functions pickled by value, and the original
paths of shipped scripts (for readable remote tracebacks).
"""
from __future__ import annotations

import platform
import re
import sys

MANIFEST = "__turbolift__/manifest.json"
FORMAT = 1
BUNDLE_ID = re.compile(r"sha256:[0-9a-f]{64}")
MAX_FILES = 20_000   # a worker refuses a bundle of more entries


def python_tag() -> dict:
    """This interpreter as a manifest records it: ``{"python": "3.11", "implementation": "cpython"}``."""
    return {"python": "%d.%d" % sys.version_info[:2],
            "implementation": platform.python_implementation().lower()}
