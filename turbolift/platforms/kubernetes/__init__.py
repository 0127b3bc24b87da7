"""Workers as the pods of a Kubernetes Deployment: the ``k8s://`` platform.

:mod:`.platform` is the :class:`Kubernetes` cluster; :mod:`.objects` builds
the objects of a run as plain dicts; :mod:`.api` is the one boundary to the
API (the official client); :mod:`.endpoints` follows the ready pods;
:mod:`.diagnose` explains pods that do not become ready; :mod:`.cleanup`
deletes runs; :mod:`.command` is ``turbolift kube``. Importing this package
imports neither the Kubernetes client nor gRPC.
"""
from .cleanup import cleanup, delete_labelled
from .endpoints import ready_addresses, ready_endpoints
from .platform import Kubernetes, resources_for

__all__ = ["Kubernetes", "cleanup", "delete_labelled", "ready_addresses", "ready_endpoints", "resources_for"]
