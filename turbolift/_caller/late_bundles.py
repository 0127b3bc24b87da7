"""The bundles of project modules that values sent to a worker refer to, besides the function's own.

A call ships the bundles its arguments need with it (``Call.extra``: a
function of a test module passed as an argument, an instance of another
module's class). A value the worker asks for while the call runs (the next
item of an iterator argument, a nested call's result) is pickled only then,
and may refer to a project module the call did not ship: a generator that
yields instances of a class no argument had. Such bundles are uploaded on a
stream of their own before the value is sent, and the value's reply names
them, for the worker to make them importable before it unpickles the value.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from .bundling import Bundle, module_bundle, needs_shipping
from .exchange import upload_aside


def extra_bundles(shipped: Iterable[Bundle], modules: Optional[set]) -> tuple[Bundle, ...]:
    """The bundles of the project modules among ``modules`` that none of ``shipped`` holds."""
    if not modules:
        return ()
    # (looked up in each manifest, not merged into one set: this runs for every call whose arguments
    # refer to a module, and a big project's manifest holds hundreds)
    manifests = [bundle.manifest.get("modules", {}) for bundle in shipped]
    return tuple(module_bundle(name) for name in sorted(modules)
                 if not any(name in held for held in manifests) and needs_shipping(name))


def shipper(call: Any, connection: Any) -> Callable[[set], list[str]]:
    """For the values sent during ``call`` (a :class:`.calls.Call`) to ``connection``'s worker: a function
    of the modules a value refers to that uploads the bundles it needs and returns their ids."""
    checked: set = set()   # modules already found shipped, or shipped now (each value sends its own list)
    sent: dict[str, str] = {}   # module -> the id of the bundle sent for it

    def ship(modules: set) -> list[str]:
        for bundle in extra_bundles((call.bundle, *call.extra), modules - checked):
            if bundle.id not in connection.bundles:
                upload_aside(connection, bundle)
            for name in bundle.manifest.get("modules", {}):
                sent.setdefault(name, bundle.id)
        checked.update(modules)
        return sorted({sent[name] for name in modules if name in sent})
    return ship
