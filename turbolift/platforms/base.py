"""The platform interface: where workers come from.

A platform is a :class:`Cluster`: it brings workers up, says where they are
and takes them down. The caller's dispatcher drives it through exactly the
methods below; adding a platform touches no other part of turbolift (see
:mod:`turbolift.platforms.registry` for how URLs find it). This module must
stay importable without gRPC (``import turbolift`` loads it).
"""
from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .._wire.tls import TLS


class Cluster(abc.ABC):
    """The platform interface.

    ``start`` may return before workers are ready; ``wait_ready`` blocks at
    most ``timeout`` seconds until they are (never by sleeping a fixed time)
    and returns their addresses; ``stop`` is idempotent and must leave no
    worker behind. ``token`` is what callers must present, or None; ``tls``
    how to reach the workers over TLS, or None for plaintext;
    ``ready_timeout`` how long callers wait for the workers at first use and
    for a replacement after one is lost.

    Subclasses call ``super().__init__()``.
    """

    token: Optional[str] = None
    tls: Optional["TLS"] = None
    ready_timeout: float = 60.0

    def __init__(self) -> None:
        self._subscribers: list[Callable[[list[str]], None]] = []
        self._subscribers_lock = threading.Lock()

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def wait_ready(self, timeout: float) -> list[str]: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def replace(self, address: str, timeout: float) -> Optional[str]:
        """Bring up a substitute for a worker that died; return its address, or None if not possible."""
        return None

    def exit_reason(self, address: str, timeout: float = 0.0) -> Optional[str]:
        """How the worker at ``address`` ended ("killed by SIGSEGV"), if known."""
        return None

    def local_pids(self) -> list[int]:
        """Process ids of worker processes this platform runs on this machine (none by default)."""
        return []

    def busy_in_native_code(self, address: str) -> bool:
        """True when the worker at ``address`` is seen running although it has sent nothing for a
        while: a call inside one long C call that holds the GIL (its heartbeats wait for the GIL).
        Callers then keep waiting instead of treating it as lost. False where the platform cannot
        see the worker's process (the default)."""
        return False

    def subscribe(self, callback: Callable[[list[str]], None]) -> None:
        """Register ``callback`` to receive the full address list whenever it changes.

        Platforms whose workers come and go on their own (pods of a
        Kubernetes Deployment) call it from any thread; the dispatcher then
        opens channels to new addresses and closes those that went away.
        The default platform never changes its addresses by itself.
        """
        with self._subscribers_lock:
            self._subscribers.append(callback)

    def publish(self, addresses: list[str]) -> None:
        """For platforms: tell subscribers about a new address list."""
        with self._subscribers_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(list(addresses))

    def __enter__(self) -> "Cluster":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
