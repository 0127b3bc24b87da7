"""Turning distribution on and off for this process.

:func:`activate` is what ``python -m turbolift`` and the ``TURBOLIFT=1``
hook do: make the caller side's client, hand it to the runtime, install the
import hook for ``--remote`` names. :func:`enable` and :func:`disable` do
the same for code (the tests, the benchmarks) that chooses a cluster object.
"""
from __future__ import annotations

from typing import Any

from .. import _runtime
from .._caller.client import Client
from .._settings import Settings


def activate(settings: Settings, eager: bool, cluster: Any = None) -> Client:
    """Switch distribution on with ``settings``; ``eager`` starts the default cluster's workers now.

    ``cluster`` (a Cluster object or URL) overrides ``settings.cluster`` as
    the cluster of functions marked without one.
    """
    client = Client(settings, default_cluster=cluster)
    _runtime.enable(client)
    if eager:
        client.start_default()   # first: the workers' start is the longest part of a short program's
    if settings.remote:
        # Load the caller side before the hook marks anything: a module named in
        # --remote may be one turbolift imports itself (json), and must then be
        # marked after it, not while its import is half done.
        client.load()
    from . import hook  # (imports the marker: after the workers' start)

    hook.install(settings.remote)
    return client


def enable(cluster: Any = None, **settings: Any) -> Client:
    """Switch distribution on over ``cluster`` with the given settings (``timeout=``, ``retries=``...)."""
    return activate(Settings(**settings), eager=False, cluster=cluster)


def disable() -> None:
    """Stop every cluster and go back to local mode."""
    _runtime.disable()
