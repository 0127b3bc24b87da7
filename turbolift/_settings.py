"""The settings of a distributed run, typed once.

Built by :mod:`turbolift._enabling.config` from the command line, the
environment and project files; held by the runtime; read by the caller side.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

DEFAULT_RETRIES = 2


@dataclass
class Settings:
    cluster: Optional[str] = None       # URL of the default cluster (None: local)
    workers: Optional[int] = None       # local workers (None: one per CPU)
    remote: list = field(default_factory=list)   # MODULE:QUALNAME names to distribute
    token_file: Optional[str] = None
    timeout: Optional[float] = None     # default per-call deadline in seconds
    retries: Optional[int] = None       # retries of a call whose worker was lost
    output_prefix: Optional[bool] = None  # name function and worker before forwarded output (default on)
    preload: Optional[bool] = None      # ready workers for a marked module once imported (default on)
    sources: dict = field(default_factory=dict)  # key -> where its value came from

    @property
    def retries_or_default(self) -> int:
        return DEFAULT_RETRIES if self.retries is None else self.retries

    @property
    def prefix_or_default(self) -> bool:
        return True if self.output_prefix is None else self.output_prefix

    @property
    def preload_or_default(self) -> bool:
        return True if self.preload is None else self.preload


KEYS = tuple(f.name for f in fields(Settings) if f.name != "sources")
