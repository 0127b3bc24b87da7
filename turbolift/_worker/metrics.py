"""Prometheus metrics of a worker, on an opt-in port (``turbolift worker --metrics-port PORT``).

Uses the official ``prometheus-client`` (``pip install 'turbolift[metrics]'``).
Without ``--metrics-port`` nothing is imported and every hook below is a
no-op attribute check. Exposed, by function (``module.qualname``):
``turbolift_calls_started_total``, ``turbolift_calls_finished_total`` (with
``outcome``: returned, raised, iterator, failed), ``turbolift_call_seconds``
(a histogram); and ``turbolift_bytes_received_total``,
``turbolift_bytes_sent_total``, ``turbolift_bundles`` (held in the cache),
``turbolift_slots_busy`` and ``turbolift_slots``.
"""
from __future__ import annotations

from typing import Any, Optional

from ..errors import ConfigurationError


class Metrics:
    """The worker's metrics; inert until :meth:`serve`."""

    def __init__(self) -> None:
        self.on = False
        self._started: Any = None
        self._finished: Any = None
        self._seconds: Any = None
        self._received: Any = None
        self._sent: Any = None

    def serve(self, host: str, port: int, state: Any) -> int:
        """Expose the metrics of ``state`` (a WorkerState) over HTTP; return the port."""
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigurationError("--metrics-port needs prometheus-client: pip install "
                                     "'turbolift[metrics]'") from None
        registry = prom.CollectorRegistry()
        self._started = prom.Counter("turbolift_calls_started", "Calls started, by function", ["function"],
                                     registry=registry)
        self._finished = prom.Counter("turbolift_calls_finished", "Calls finished, by function and outcome",
                                      ["function", "outcome"], registry=registry)
        self._seconds = prom.Histogram("turbolift_call_seconds", "Time a call ran, by function", ["function"],
                                       registry=registry)
        self._received = prom.Counter("turbolift_bytes_received", "Payload bytes received (arguments, "
                                      "bundles)", registry=registry)
        self._sent = prom.Counter("turbolift_bytes_sent", "Payload bytes sent (results, items)",
                                  registry=registry)
        gauges = {"turbolift_bundles": ("Bundles in the cache", lambda: len(state.store.sizes())),
                  "turbolift_slots_busy": ("Calls of user code running now", lambda: state.watchdog.running),
                  "turbolift_slots": ("Most calls of user code run at once", lambda: state.watchdog.slots)}
        for name, (text, read) in gauges.items():
            prom.Gauge(name, text, registry=registry).set_function(read)
        try:
            server, _ = prom.start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigurationError(f"could not serve metrics on {host}:{port}: {exc}") from None
        self.on = True
        return server.server_port

    def started(self, function: str) -> None:
        if self.on:
            self._started.labels(function).inc()

    def finished(self, function: str, outcome: str, seconds: Optional[float]) -> None:
        if self.on:
            self._finished.labels(function, outcome).inc()
            if seconds is not None:
                self._seconds.labels(function).observe(seconds)

    def received(self, size: int) -> None:
        if self.on and size:
            self._received.inc(size)

    def sent(self, size: int) -> None:
        if self.on and size:
            self._sent.inc(size)


METRICS = Metrics()
