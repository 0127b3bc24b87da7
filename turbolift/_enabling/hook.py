"""The ``sys.meta_path`` hook that distributes functions named in configuration.

Installed only when distribution is on. Marked functions bind themselves
to client stubs when they are defined (the marker asks the runtime), which
also covers calls made while a module is still executing, such as a
script's top-level code. The hook's own job is the functions that carry no
decorator: for a module named in ``--remote MODULE:QUALNAME`` it lets the
module execute, then substitutes stubs for the named functions, so every
reference the program takes afterwards (``from mod import f``, ``mod.f``)
reaches the stub. Every other import passes with one dictionary lookup.
"""
from __future__ import annotations

import importlib.abc
import inspect
import sys
from typing import Any, Iterable, Optional

from .._marker import TurboliftFunction
from ..errors import ConfigurationError


def parse_remote(names: Iterable[str]) -> dict[str, list[str]]:
    """``["mod:f", "mod:C.g"]`` -> ``{"mod": ["f", "C.g"]}`` (validated)."""
    found: dict[str, list[str]] = {}
    for name in names:
        module, sep, qualname = name.partition(":")
        if not sep or not module or not qualname:
            raise ConfigurationError(f"--remote {name!r}: write MODULE:QUALNAME, e.g. mypkg.mod:crunch")
        found.setdefault(module, []).append(qualname)
    return found


def _substitute(module: Any, qualnames: list[str]) -> None:
    for qualname in qualnames:
        *path, leaf = qualname.split(".")
        owner = module
        try:
            for part in path:
                owner = getattr(owner, part)
            original = getattr(owner, leaf)
            raw = inspect.getattr_static(owner, leaf)
        except AttributeError:
            raise ConfigurationError(
                f"--remote {module.__name__}:{qualname}: {module.__name__} has no {qualname!r}; "
                "check the spelling (names are case-sensitive)") from None
        if isinstance(original, TurboliftFunction) or isinstance(raw, TurboliftFunction):
            continue  # already marked with a decorator
        if not callable(original):
            raise ConfigurationError(f"--remote {module.__name__}:{qualname} is a "
                                     f"{type(original).__name__}, not a function")
        target = raw if isinstance(owner, type) else original
        setattr(owner, leaf, _marked(target, (module.__name__, qualname)))


def _marked(target: Any, address: tuple[str, str]) -> Any:
    """``target`` marked, keeping what it is: a static or class method of a class stays one
    (so calls through instances and subclasses bind as before), a bound method stays bound,
    a callable instance keeps being called."""
    if isinstance(target, staticmethod):
        return staticmethod(TurboliftFunction(target.__func__, address=address))
    if isinstance(target, classmethod):
        return classmethod(TurboliftFunction(target.__func__, address=address))
    return TurboliftFunction(target, address=address)


class _SubstitutingLoader:
    """Mixed into the module's own loader class: exec, then substitute."""

    _turbolift_names: list[str]

    def exec_module(self, module: Any) -> None:
        super().exec_module(module)  # type: ignore[misc]
        _substitute(module, self._turbolift_names)


class RemoteFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of modules named in ``--remote``; ignores the rest."""

    def __init__(self, remote: dict[str, list[str]]) -> None:
        self.remote = remote

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
        names = self.remote.get(fullname)
        if names is None:  # the cheap check every other import pays
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        # Keep the loader's own class (isinstance checks elsewhere still pass).
        wrapped_class = type(f"Turbolift{type(loader).__name__}", (_SubstitutingLoader, type(loader)), {})
        wrapped = object.__new__(wrapped_class)
        wrapped.__dict__.update(getattr(loader, "__dict__", {}))
        wrapped._turbolift_names = names
        spec.loader = wrapped
        return spec


_installed: Optional[RemoteFinder] = None


def installed() -> Optional[RemoteFinder]:
    """The hook, once :func:`install` has put it on ``sys.meta_path``."""
    return _installed


def install(remote: Iterable[str] = ()) -> RemoteFinder:
    """Install the hook (once); substitute at once in modules already imported."""
    global _installed
    parsed = parse_remote(remote)
    if _installed is None:
        _installed = RemoteFinder({})
        sys.meta_path.insert(0, _installed)
    for module_name, qualnames in parsed.items():
        _installed.remote.setdefault(module_name, []).extend(qualnames)
        if module_name in sys.modules and module_name != "__main__":
            _substitute(sys.modules[module_name], qualnames)
    return _installed
