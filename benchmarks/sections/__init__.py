"""The sections of the suite, one module each, in the order of issue 4.

Each module has a ``TITLE`` and ``run(ctx) -> dict`` returning
``{"figures": {name: figure}, "params": {...}, "notes": [...]}`` where a
figure is a :func:`benchmarks.measure.summarise` dict (median, p99, n ...).
A section raises :class:`Skip` to be recorded as skipped with a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..settings import Mode


class Skip(Exception):
    """Raised by a section that cannot run here; the message is the recorded reason."""


@dataclass
class Context:
    mode: Mode
    tmp: Path
    log: Callable[[str], None]
    contenders: Optional[object] = None      # benchmarks.harness.Contenders, for in-process sections
    results: dict = field(default_factory=dict)  # sections already run, by name
