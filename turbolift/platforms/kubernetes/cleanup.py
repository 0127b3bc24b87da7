"""Deleting the objects of turbolift runs by label (at exit, and ``turbolift kube cleanup``)."""
from __future__ import annotations

from typing import Optional

from ...errors import ClusterError, ConfigurationError
from . import objects as kobjects
from .api import Api, KubeApiError

DELETE_KINDS = ("HorizontalPodAutoscaler", "Deployment", "Service", "Secret")


def delete_labelled(api: Api, namespace: str, label_selector: str) -> list[str]:
    """Delete every turbolift object kind matching ``label_selector``; return ``kind/name`` of each deleted.

    Pods, ReplicaSets and EndpointSlices go with the objects that own them.
    Raises :class:`ClusterError` naming what could not be deleted.
    """
    deleted, failures = [], []
    for kind in DELETE_KINDS:
        try:
            items, _ = api.list(kind, namespace, label_selector=label_selector)
        except KubeApiError as exc:
            failures.append(f"listing {kind}s: {exc.message or exc}")
            continue
        for item in items:
            name = item["metadata"]["name"]
            try:
                api.delete(kind, namespace, name)
            except KubeApiError as exc:
                if exc.status != 404:  # already gone is what we wanted
                    failures.append(f"{kind} {name}: {exc.message or exc}")
                continue
            deleted.append(f"{kind.lower()}/{name}")
    if failures:
        raise ClusterError("; ".join(failures))
    return deleted


def cleanup(namespace: str = "default", run_id: Optional[str] = None, all_runs: bool = False, *,
            kubeconfig: Optional[str] = None, context: Optional[str] = None,
            api: Optional[Api] = None) -> list[str]:
    """Delete the objects of one run (``run_id``) or of every turbolift run (``all_runs``) in ``namespace``.

    Returns ``kind/name`` of each object deleted. ``all_runs`` also removes
    the runs of programs still running.
    """
    if (run_id is None) == (not all_runs):
        raise ConfigurationError("give either a run id or all_runs=True")
    selector = kobjects.MANAGED_SELECTOR if all_runs else kobjects.run_selector(run_id or "")
    if api is None:
        from .api import KubeApi

        api = KubeApi(kubeconfig, context)
    return delete_labelled(api, namespace, selector)
