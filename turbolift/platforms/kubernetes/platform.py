"""Workers as the pods of a Kubernetes Deployment.

``Kubernetes(namespace="team-a", image="registry.example/turbolift-worker:0.1.0", replicas=4)``,
or the URL ``k8s://team-a?image=registry.example/turbolift-worker:0.1.0&replicas=4``.

On :meth:`Kubernetes.start` a run creates, all labelled with one run id
(:mod:`.objects` says exactly what): a Secret holding a fresh
token (unless ``token_secret`` names one), a headless Service, a Deployment
of the generic worker image with native gRPC probes, and optionally a
HorizontalPodAutoscaler. The client balances calls over the ready pods
itself: a background thread watches the Service's EndpointSlices and
publishes the pod addresses to the dispatcher whenever pods come and go
(:mod:`.endpoints`).
:meth:`~Kubernetes.wait_ready` blocks on that watch, never on a fixed sleep,
and when time runs out it says why the pods are not ready. :meth:`~Kubernetes.stop`
deletes everything carrying the run id; ``turbolift kube cleanup`` removes
what a crashed program left behind.

The caller must be able to reach pod IPs: run it inside the cluster, or on a
machine with a route to the pod network (see the README).

Importing this module imports neither the Kubernetes client nor gRPC; the
client is loaded when a cluster first talks to the API.
"""
from __future__ import annotations

import base64
import binascii
import os
import secrets
import sys
import threading
import time
from typing import Any, Callable, Mapping, Optional
from urllib.parse import parse_qs, urlsplit

from ..._wire.auth import read_token
from ...errors import ClusterError, ConfigurationError
from ..base import Cluster
from . import diagnose
from . import objects as kobjects
from .api import Api, KubeApiError
from .cleanup import delete_labelled
from .endpoints import EndpointFollower

DEFAULT_START_TIMEOUT = 300.0  # scheduling and image pulls routinely take more than a minute


class Kubernetes(Cluster):
    """Generic turbolift workers as a Deployment on a Kubernetes cluster.

    ``image`` is the worker image built from the project's Dockerfile
    (default ``$TURBOLIFT_IMAGE``); it must hold the same Python minor
    version and third-party packages as the caller. ``resources`` is a
    ResourceRequirements dict (default: requests 500m CPU / 512Mi, limits
    1 CPU / 1Gi). ``min_replicas``/``max_replicas`` add a HorizontalPodAutoscaler
    on CPU (``cpu_utilization`` percent). Without ``token_secret`` each run
    creates a Secret with a fresh token (or ``token``/``token_file``); with
    it, the token is read from that existing Secret (key ``token_key``).

    ``attach=True`` with a ``run_id`` uses a run that already exists (one
    applied from ``turbolift kube manifests``): nothing is created or deleted.

    The API is configured from ``kubeconfig``/``context``, else in-cluster
    configuration, else the default kubeconfig. ``api`` replaces the whole
    API boundary (:class:`.api.Api`); tests pass a stand-in.
    ``start_timeout`` is how long callers wait for the pods to be ready.
    """

    def __init__(self, namespace: str = "default", image: Optional[str] = None, replicas: int = 2, *,
                 resources: Optional[Mapping[str, Mapping[str, str]]] = None,
                 token_secret: Optional[str] = None, token_key: str = kobjects.TOKEN_FILE_NAME,
                 token: Optional[str] = None, token_file: Optional[str] = None,
                 min_replicas: Optional[int] = None, max_replicas: Optional[int] = None,
                 cpu_utilization: int = 80, image_pull_policy: Optional[str] = None,
                 metrics_port: Optional[int] = None, start_timeout: float = DEFAULT_START_TIMEOUT,
                 kubeconfig: Optional[str] = None,
                 context: Optional[str] = None, run_id: Optional[str] = None, attach: bool = False,
                 api: Optional[Api] = None) -> None:
        super().__init__()
        self.namespace = namespace
        self.attach = attach
        if attach:
            if run_id is None:
                raise ConfigurationError("attach=True needs the run_id of the run to use")
            kobjects.check_namespace(namespace)
            self.spec: Optional[kobjects.WorkerSpec] = None
        else:
            self.spec = kobjects.WorkerSpec(
                namespace=namespace, image=image or os.environ.get("TURBOLIFT_IMAGE", ""), replicas=replicas,
                resources=resources if resources is not None else kobjects.DEFAULT_RESOURCES,
                token_secret=token_secret, token_key=token_key, min_replicas=min_replicas,
                max_replicas=max_replicas, cpu_utilization=cpu_utilization,
                image_pull_policy=image_pull_policy, metrics_port=metrics_port)
        self.run_id = kobjects.check_run_id(run_id) if run_id is not None else kobjects.new_run_id()
        self.names = kobjects.Names.of(self.run_id)
        self.ready_timeout = start_timeout
        self._token_secret = token_secret
        self._token_key = token_key
        if token is None and token_file is not None:
            token = read_token(None, token_file)
        self._token = token
        if self._token is None and token_secret is None and not attach:
            self._token = secrets.token_urlsafe(32)
        self._kubeconfig = kubeconfig
        self._context = context
        self._api = api
        self._lock = threading.Lock()             # lifecycle
        self._api_lock = threading.Lock()
        self._endpoints = EndpointFollower(lambda: self.api, namespace, self.names.service, self.publish)
        self._started = False
        self._stopped = False

    # -- configuration -----------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, api: Optional[Api] = None) -> "Kubernetes":
        """``k8s://NAMESPACE?image=IMAGE&replicas=N&...`` (the keys are listed in ``_URL_KEYS``).

        ``cpu``/``memory`` set both the request and the limit; ``pull_policy`` and
        ``timeout`` stand for ``image_pull_policy`` and ``start_timeout``. An
        unknown or repeated key is an error, not silently ignored.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("k8s", "kubernetes"):
            raise ConfigurationError(f"{url!r} is not a k8s:// URL")
        if parts.path not in ("", "/"):
            raise ConfigurationError(f"cluster URL {url!r}: write k8s://NAMESPACE?options (no path)")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(_URL_KEYS))
        if unknown:
            raise ConfigurationError(f"cluster URL {url!r}: unknown option(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(sorted(_URL_KEYS))}")
        repeated = sorted(key for key, values in query.items() if len(values) > 1)
        if repeated:
            raise ConfigurationError(f"cluster URL {url!r}: option(s) {', '.join(repeated)} given twice")
        values = {key: vals[0] for key, vals in query.items()}
        kwargs: dict[str, Any] = {"namespace": parts.netloc or "default", "api": api}
        for key, value in values.items():
            if key in ("cpu", "memory"):
                continue
            convert = _URL_KEYS[key]
            try:
                kwargs[_URL_ARGUMENT.get(key, key)] = convert(value)
            except ValueError:
                raise ConfigurationError(f"cluster URL {url!r}: bad value {value!r} for {key}") from None
        if "cpu" in values or "memory" in values:
            kwargs["resources"] = resources_for(values.get("cpu"), values.get("memory"))
        return cls(**kwargs)

    @property
    def api(self) -> Api:
        """The Kubernetes API (the official client, configured on first use)."""
        with self._api_lock:
            if self._api is None:
                from .api import KubeApi

                self._api = KubeApi(self._kubeconfig, self._context)
            return self._api

    @property
    def token(self) -> Optional[str]:  # type: ignore[override]
        """What callers present; read from the named Secret on first use when not given."""
        if self._token is None:
            self._token = self._read_secret_token()
        return self._token

    def _read_secret_token(self) -> str:
        name = self._token_secret or self.names.secret
        try:
            found = self.api.read("Secret", self.namespace, name)
        except KubeApiError as exc:
            if exc.status == 404:
                raise ClusterError(
                    f"Secret {name!r} not found in namespace {self.namespace}: create it with "
                    f"`kubectl -n {self.namespace} create secret generic {name} "
                    f"--from-file={self._token_key}=TOKEN_FILE`") from None
            raise ClusterError(f"cannot read Secret {name!r} in namespace {self.namespace}: {exc}") from None
        encoded = (found.get("data") or {}).get(self._token_key)
        try:
            token = base64.b64decode(encoded, validate=True).decode().strip() if encoded else ""
        except (binascii.Error, UnicodeDecodeError):
            token = ""
        if not token:
            raise ClusterError(f"Secret {name!r} in namespace {self.namespace} holds no token under the "
                               f"key {self._token_key!r}")
        return token

    def objects(self) -> list[dict]:
        """Exactly the objects :meth:`start` creates (what ``turbolift kube manifests`` prints)."""
        if self.spec is None:
            raise ConfigurationError("an attached run creates no objects")
        return kobjects.build(self.spec, self.run_id, None if self._token_secret else self._token)

    @property
    def start_timeout(self) -> float:
        """How long callers wait for the pods to be ready (the ``ready_timeout`` of the interface)."""
        return self.ready_timeout

    # -- the Cluster interface ---------------------------------------------------
    def start(self) -> None:
        """Create the run's objects (unless attached) and start following its endpoints."""
        with self._lock:
            if self._started or self._stopped:
                return
            if not self.attach:
                self._create(self.objects())
            self._started = True
        self._endpoints.start()

    def _create(self, objects: list[dict]) -> None:
        api = self.api
        created: list[dict] = []
        for obj in objects:
            try:
                api.create(obj)
            except KubeApiError as exc:
                for done in reversed(created):  # leave nothing half-made behind
                    try:
                        api.delete(done["kind"], self.namespace, done["metadata"]["name"])
                    except KubeApiError:
                        pass
                raise ClusterError(self._explain(exc, obj)) from None
            created.append(obj)

    def _explain(self, exc: KubeApiError, obj: dict) -> str:
        kind, name, ns = obj["kind"], obj["metadata"]["name"], self.namespace
        what = f"could not create {kind} {name} in namespace {ns}: {exc.message}"
        if exc.status == 0:
            return f"{what}. Is the cluster up and the kubeconfig context right? (kubectl cluster-info)"
        if exc.status in (401, 403):
            return (f"{what}. Check your permissions: kubectl auth can-i create {kind.lower()}s -n {ns} "
                    "(turbolift needs create, list and delete on secrets, services, deployments and "
                    "horizontalpodautoscalers; get on secrets and deployments; list and watch on "
                    "endpointslices; list on pods and events; get on pods/log)")
        if exc.status == 404:
            return f"{what}. Does the namespace exist? (kubectl create namespace {ns})"
        if exc.status == 409:
            return (f"{what}. A run with id {self.run_id} already exists: pick another run_id or remove it "
                    f"(turbolift kube cleanup --namespace {ns} --run-id {self.run_id})")
        return what

    def wait_ready(self, timeout: float) -> list[str]:
        """Block until the run's pods are ready (as many as it starts with); return their addresses."""
        self.start()
        wanted = self._wanted()
        started = time.monotonic()
        deadline = started + timeout
        endpoints = self._endpoints
        with endpoints.condition:
            while True:
                if self._stopped:
                    raise ClusterError(f"{self!r} has been stopped")
                addresses = endpoints.addresses()
                if len(addresses) >= wanted:
                    return addresses
                error = endpoints.error
                if isinstance(error, KubeApiError) and error.status in (401, 403, 404):
                    break  # waiting will not mend permissions or a missing namespace
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                endpoints.condition.wait(remaining)
            ready = len(addresses)
        raise ClusterError(self._not_ready(ready, wanted, time.monotonic() - started))

    def _wanted(self) -> int:
        if self.spec is not None:
            return self.spec.initial_replicas
        try:
            found = self.api.read("Deployment", self.namespace, self.names.deployment)
        except KubeApiError as exc:
            if exc.status == 404:
                raise ClusterError(
                    f"no turbolift run {self.run_id} in namespace {self.namespace} to attach to: apply it "
                    f"first (turbolift kube manifests --namespace {self.namespace} --run-id {self.run_id} "
                    "--image IMAGE | kubectl apply -f -)") from None
            raise ClusterError(f"cannot read the Deployment of run {self.run_id}: {exc}") from None
        return max(1, int((found.get("spec") or {}).get("replicas") or 1))

    def _not_ready(self, ready: int, wanted: int, waited: float) -> str:
        """Gather what the API says about the run's pods into an actionable message."""
        api, ns = self.api, self.namespace
        deployment: Optional[dict] = None
        pods: list[dict] = []
        events: list[dict] = []
        logs: dict[str, str] = {}
        problems = []
        try:
            deployment = api.read("Deployment", ns, self.names.deployment)
            pods, _ = api.list("Pod", ns, label_selector=kobjects.run_selector(self.run_id))
            warnings, _ = api.list("Event", ns, field_selector="type=Warning")
            prefix = self.names.deployment + "-"
            events = [e for e in warnings
                      if (e.get("involvedObject") or {}).get("name", "").startswith(prefix)]
            for pod in pods:
                statuses = (pod.get("status") or {}).get("containerStatuses") or []
                if any(s.get("restartCount") or (s.get("lastState") or {}).get("terminated")
                       for s in statuses):
                    name = pod["metadata"]["name"]
                    logs[name] = api.pod_log(ns, name, previous=True, tail_lines=diagnose.MAX_LOG_LINES)
                    if len(logs) >= 2:
                        break
        except KubeApiError as exc:
            problems.append(f"could not inspect the run: {exc}")
        if self._endpoints.error is not None:
            problems.append(str(self._endpoints.error))
        return diagnose.report(run_id=self.run_id, namespace=ns, ready=ready, wanted=wanted,
                                     waited=waited, deployment=deployment, pods=pods, events=events,
                                     logs=logs, api_error="; ".join(problems) or None)

    def exit_reason(self, address: str, timeout: float = 0.0) -> Optional[str]:
        """How the pod at ``address`` lost its worker ("OOMKilled, exit code 137"), from its status.

        The kubelet records a container's end a moment after it happens, so
        the status is read again for up to ``timeout`` seconds.
        """
        pod_name = self._endpoints.pod_of(address)
        if pod_name is None:
            return None
        deadline = time.monotonic() + timeout
        while True:
            reason = self._pod_end(pod_name)
            if reason is not None or time.monotonic() >= deadline or self._endpoints.stopping.wait(0.25):
                return reason

    def _pod_end(self, pod_name: str) -> Optional[str]:
        try:
            pod = self.api.read("Pod", self.namespace, pod_name)
        except KubeApiError as exc:
            return f"pod {pod_name} is gone" if exc.status == 404 else None
        status = pod.get("status") or {}
        if status.get("reason"):  # Evicted, Preempting, ...
            return f"pod {pod_name} {status['reason']}: {status.get('message', '')}".rstrip(": ")
        for container in status.get("containerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated") or \
                (container.get("lastState") or {}).get("terminated")
            if ended:
                return (f"pod {pod_name}: {ended.get('reason') or 'terminated'}, "
                        f"exit code {ended.get('exitCode', '?')}")
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return f"pod {pod_name} is being deleted"
        return None

    def addresses(self) -> list[str]:
        """The addresses of the pods that are ready now."""
        return self._endpoints.addresses()

    def subscribe(self, callback: Callable[[list[str]], None]) -> None:
        super().subscribe(callback)
        # The addresses may have changed since wait_ready returned: send the
        # current list once more (from the publishing thread, in order).
        self._endpoints.send_again()

    def stop(self) -> None:
        """Stop following and delete every object with the run id (unless attached). Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            started = self._started
        self._endpoints.stop()
        if started and not self.attach:
            try:
                delete_labelled(self.api, self.namespace, kobjects.run_selector(self.run_id))
            except ClusterError as exc:
                print(f"turbolift: could not delete the Kubernetes objects of run {self.run_id}: {exc}\n"
                      f"turbolift: remove them with `turbolift kube cleanup --namespace {self.namespace} "
                      f"--run-id {self.run_id}`", file=sys.stderr)

    def __repr__(self) -> str:
        image = self.spec.image if self.spec else None
        if self.attach:
            return f"Kubernetes(namespace={self.namespace!r}, run_id={self.run_id!r}, attach=True)"
        replicas = self.spec.initial_replicas if self.spec else "?"
        return (f"Kubernetes(namespace={self.namespace!r}, image={image!r}, replicas={replicas}, "
                f"run_id={self.run_id!r})")


def resources_for(cpu: Optional[str] = None, memory: Optional[str] = None) -> dict[str, dict[str, str]]:
    """The default resources with ``cpu`` and/or ``memory`` as both request and limit."""
    resources = {kind: dict(amounts) for kind, amounts in kobjects.DEFAULT_RESOURCES.items()}
    for key, value in (("cpu", cpu), ("memory", memory)):
        if value:
            resources["requests"][key] = resources["limits"][key] = value
    return resources


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("", "1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


# URL key -> conversion of its value; keys differing from the keyword argument are mapped below.
_URL_KEYS: dict[str, Callable[[str], Any]] = {
    "image": str, "replicas": int, "cpu": str, "memory": str, "token_secret": str, "token_key": str,
    "token_file": str, "min_replicas": int, "max_replicas": int, "cpu_utilization": int,
    "pull_policy": str, "timeout": float, "kubeconfig": str, "context": str, "run_id": str, "attach": _flag,
    "metrics_port": int,
}
_URL_ARGUMENT = {"pull_policy": "image_pull_policy", "timeout": "start_timeout"}

