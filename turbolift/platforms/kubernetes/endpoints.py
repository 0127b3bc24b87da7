"""Following the ready pods of a run, through its headless Service's EndpointSlices.

The client balances calls over the pods itself (a ClusterIP Service would
pin each gRPC connection to one pod), so it needs the current list of ready
pod addresses. :class:`EndpointFollower` keeps it: list, then watch from the
list's resource version; when the watch ends (its server-side timeout) or
its version expires (410 Gone), list afresh. Changes are published to the
platform's subscribers from one thread of their own, in order.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from . import objects as kobjects
from .api import Api, KubeApiError

WATCH_SECONDS = 240            # a watch is re-established (from a fresh list) this often
_RETRY_MAX = 10.0


def ready_endpoints(endpoint_slice: dict) -> list[tuple[str, Optional[str]]]:
    """``(host:port, pod name or None)`` of each ready, not terminating endpoint of an EndpointSlice.

    A nil ``ready`` condition means ready (as the API documents); addresses
    of an endpoint are fungible, so the first is used.
    """
    port = next((p.get("port") for p in endpoint_slice.get("ports") or []
                 if p.get("name") == kobjects.PORT_NAME), None)
    family = endpoint_slice.get("addressType")
    if port is None or family not in ("IPv4", "IPv6"):
        return []
    found = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is False or conditions.get("terminating"):
            continue
        addresses = endpoint.get("addresses") or []
        if addresses:
            host = f"[{addresses[0]}]" if family == "IPv6" else addresses[0]
            target = endpoint.get("targetRef") or {}
            found.append((f"{host}:{port}", target.get("name") if target.get("kind") == "Pod" else None))
    return found


def ready_addresses(endpoint_slice: dict) -> list[str]:
    """``host:port`` of each ready, not terminating endpoint of an EndpointSlice."""
    return [address for address, _ in ready_endpoints(endpoint_slice)]


class EndpointFollower:
    """The ready addresses of one Service, kept current by a watch.

    ``publish`` receives every new address list (from the publishing thread).
    ``condition`` is notified whenever the list or ``error`` changes, so
    that a waiter can block on it.
    """

    def __init__(self, api: Callable[[], Api], namespace: str, service: str,
                 publish: Callable[[list[str]], None]) -> None:
        self._api = api
        self._namespace = namespace
        self._selector = f"{kobjects.SERVICE_NAME_LABEL}={service}"
        self._publish = publish
        self.condition = threading.Condition()
        self._addresses: list[str] = []
        self._pods: dict[str, Optional[str]] = {}  # address -> pod name, kept after a pod leaves
        self._generation = 0
        self._catch_up = False
        self.error: Optional[BaseException] = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target, name in ((self._follow, "turbolift-kube-follow"),
                             (self._publish_changes, "turbolift-kube-publish")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def addresses(self) -> list[str]:
        with self.condition:
            return list(self._addresses)

    def pod_of(self, address: str) -> Optional[str]:
        """The pod that served ``address`` (also after it left), if known."""
        with self.condition:
            return self._pods.get(address)

    def send_again(self) -> None:
        """Publish the current list once more (a subscriber arrived after the last change)."""
        with self.condition:
            self._catch_up = True
            self.condition.notify_all()

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.stop()
        with self.condition:
            self.condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)

    def _follow(self) -> None:
        """Keep the address list equal to the ready endpoints; errors are kept and retried with back-off."""
        delay = 0.5
        while not self.stopping.is_set():
            try:
                api = self._api()
                items, version = api.list("EndpointSlice", self._namespace, label_selector=self._selector)
                slices = {item["metadata"]["name"]: item for item in items}
                self._set_slices(slices)
                stream = api.watch("EndpointSlice", self._namespace, self._selector, version, WATCH_SECONDS)
                with self._lock:
                    self._stream = stream
                if self.stopping.is_set():
                    return
                self.error = None
                for kind, obj in stream:
                    if self.stopping.is_set():
                        return
                    name = obj["metadata"]["name"]
                    if kind == "DELETED":
                        slices.pop(name, None)
                    else:
                        slices[name] = obj
                    self._set_slices(slices)
                delay = 0.5
            except Exception as exc:  # the follower must outlive any one failure
                if self.stopping.is_set():
                    return
                if isinstance(exc, KubeApiError) and exc.status == 410:
                    continue  # our version is too old: list afresh
                self.error = exc
                with self.condition:
                    self.condition.notify_all()
                self.stopping.wait(delay)
                delay = min(delay * 2, _RETRY_MAX)

    def _set_slices(self, slices: dict[str, dict]) -> None:
        endpoints = dict(pair for item in slices.values() for pair in ready_endpoints(item))
        addresses = sorted(endpoints)
        with self.condition:
            self._pods.update(endpoints)
            if addresses != self._addresses:
                self._addresses = addresses
                self._generation += 1
                self.condition.notify_all()

    def _publish_changes(self) -> None:
        """Tell the subscribers the latest address list, in order, from this one thread.

        Subscribers (the dispatcher) take their own locks; calling them here
        rather than from the follower keeps a slow subscriber from ever
        holding up the watch or a waiter.
        """
        published = 0
        while True:
            with self.condition:
                while not self.stopping.is_set() and self._generation == published and not self._catch_up:
                    self.condition.wait()
                if self.stopping.is_set():
                    return
                published, self._catch_up = self._generation, False
                addresses = list(self._addresses)
            self._publish(addresses)
