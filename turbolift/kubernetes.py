"""The Kubernetes platform, under the name it has always had.

It lives in :mod:`turbolift.platforms.kubernetes`; this module keeps
``from turbolift.kubernetes import Kubernetes`` working.
"""
from .platforms.kubernetes import (
    Kubernetes,
    cleanup,
    delete_labelled,
    ready_addresses,
    ready_endpoints,
    resources_for,
)

__all__ = ["Kubernetes", "cleanup", "delete_labelled", "ready_addresses", "ready_endpoints", "resources_for"]
