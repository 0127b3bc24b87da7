"""Settings, from the command line, the environment and project files.

Precedence, highest first: command line; environment (``TURBOLIFT_*``);
``[tool.turbolift]`` in the nearest ``pyproject.toml``; ``[turbolift]`` in
the nearest ``setup.cfg``. Each key is taken whole from the highest source
that sets it (a ``remote`` list is not merged across sources).
"""
from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .._settings import KEYS, Settings
from ..errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _as_list(value: Any) -> list:
    if isinstance(value, str):
        return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise ValueError("expected a list of MODULE:QUALNAME strings")


def _as_flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "cluster": str, "workers": int, "remote": _as_list, "token_file": str,
    "timeout": float, "retries": int, "output_prefix": _as_flag,
    "preload": _as_flag,
}


def _convert(key: str, value: Any, where: str) -> Any:
    try:
        return _CONVERT[key](value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: bad value {value!r} for {key!r}: {exc}") from None


def _environment(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    found = {}
    for key in KEYS:
        name = f"TURBOLIFT_{key.upper()}"
        if environ.get(name):
            found[key] = (_convert(key, environ[name], name), name)
    return found


def _nearest(start: Path, filename: str) -> Optional[Path]:
    for directory in [start, *start.parents]:
        candidate = directory / filename
        if candidate.is_file():
            return candidate
    return None


def _check_keys(table: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(k.replace("-", "_") for k in table) - set(KEYS))
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                                 f"known keys are {', '.join(KEYS)}")


def _pyproject(start: Path) -> dict[str, tuple[Any, str]]:
    path = _nearest(start, "pyproject.toml")
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle).get("tool", {}).get("turbolift", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
    where = f"{path} [tool.turbolift]"
    _check_keys(table, where)
    return {k.replace("-", "_"): (_convert(k.replace("-", "_"), v, where), where) for k, v in table.items()}


def _setup_cfg(start: Path) -> dict[str, tuple[Any, str]]:
    path = _nearest(start, "setup.cfg")
    if path is None:
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
    if not parser.has_section("turbolift"):
        return {}
    where = f"{path} [turbolift]"
    table = dict(parser.items("turbolift"))
    _check_keys(table, where)
    return {k.replace("-", "_"): (_convert(k.replace("-", "_"), v, where), where) for k, v in table.items()}


def load(command_line: Optional[Mapping[str, Any]] = None, start: Optional[Path] = None,
         environ: Mapping[str, str] = os.environ) -> Settings:
    """Merge every source; ``start`` is where the search for project files begins."""
    start = (start or Path.cwd()).resolve()
    layers = [
        {k: (v, "command line") for k, v in (command_line or {}).items()
         if k in KEYS and v not in (None, [], "")},
        _environment(environ),
        _pyproject(start),
        _setup_cfg(start),
    ]
    settings = Settings()
    for key in KEYS:
        for layer in layers:
            if key in layer:
                value, where = layer[key]
                setattr(settings, key, value)
                settings.sources[key] = where
                break
    return settings
