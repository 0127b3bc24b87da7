"""The Kubernetes objects of one turbolift run, as plain dicts.

Pure functions with no Kubernetes client and no gRPC import: the platform
(:mod:`.platform`) creates exactly these objects, and
``turbolift kube manifests`` prints exactly these objects, so what a user
applies with kubectl, Helm or GitOps is what turbolift itself would create.

Every object carries the run-id label (``turbolift.dev/run-id``), which is
how a run is found again to be followed and deleted. The dicts are in the
API's own JSON form (camelCase keys), ready for ``kubectl apply``.
"""
from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..._wire.protocol import SERVICE_NAME
from ...errors import ConfigurationError

WORKER_PORT = 50051
PORT_NAME = "grpc"
# The service the worker registers in grpc.health.v1.
HEALTH_SERVICE = SERVICE_NAME
TOKEN_DIR = "/var/run/turbolift"
TOKEN_FILE_NAME = "token"
TOKEN_PATH = f"{TOKEN_DIR}/{TOKEN_FILE_NAME}"
CACHE_DIR = "/var/cache/turbolift"
WORKER_COMMAND = ["turbolift", "worker", "--listen", f"0.0.0.0:{WORKER_PORT}", "--token-file", TOKEN_PATH]
CONTAINER_NAME = "worker"
# The uid/gid of the user the Dockerfile creates; set explicitly so that any
# image (one built FROM ours, say) runs non-root too.
RUN_AS = 10001

RUN_ID_LABEL = "turbolift.dev/run-id"
APP_LABELS = {"app.kubernetes.io/name": "turbolift-worker", "app.kubernetes.io/managed-by": "turbolift"}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=turbolift"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"   # set by Kubernetes on EndpointSlices

DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_RUN_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SECRET_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


def new_run_id() -> str:
    """A fresh run id: short, lowercase, valid in object names and label values."""
    return secrets.token_hex(5)


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ConfigurationError(
            f"run id {run_id!r} is not valid: use 1-24 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit")
    return run_id


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ConfigurationError(f"namespace {namespace!r} is not a valid Kubernetes namespace name "
                                 "(lowercase letters, digits and '-', at most 63)")
    return namespace


def run_selector(run_id: str) -> str:
    """The label selector that finds every object of one run."""
    return f"{RUN_ID_LABEL}={check_run_id(run_id)}"


@dataclass(frozen=True)
class Names:
    """The names of a run's objects (all derived from the run id)."""

    deployment: str
    service: str
    secret: str
    autoscaler: str

    @classmethod
    def of(cls, run_id: str) -> "Names":
        base = f"turbolift-{check_run_id(run_id)}"
        return cls(deployment=base, service=base, secret=f"{base}-token", autoscaler=base)


@dataclass(frozen=True)
class WorkerSpec:
    """What the user chose for a run's workers; validated on creation.

    ``resources`` is a Kubernetes ResourceRequirements dict (``requests`` and
    ``limits``). ``token_secret`` names an existing Secret holding the token
    under ``token_key``; without it the run creates its own Secret.
    ``min_replicas``/``max_replicas`` (both or neither) add a
    HorizontalPodAutoscaler on CPU at ``cpu_utilization`` percent, and then
    the Deployment starts at ``min_replicas``.
    """

    namespace: str = "default"
    image: str = ""
    replicas: int = 2
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_RESOURCES)
    token_secret: Optional[str] = None
    token_key: str = TOKEN_FILE_NAME
    min_replicas: Optional[int] = None
    max_replicas: Optional[int] = None
    cpu_utilization: int = 80
    image_pull_policy: Optional[str] = None
    metrics_port: Optional[int] = None    # Prometheus metrics of each worker (pods annotated for scraping)

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        if not self.image:
            raise ConfigurationError(
                "the Kubernetes platform needs the worker image: build it from the project's Dockerfile, "
                "push it where the cluster can pull it, and pass image=... (URL: ?image=..., "
                "or set TURBOLIFT_IMAGE)")
        if not _is_int(self.replicas) or self.replicas < 1:
            raise ConfigurationError(f"replicas must be a whole number of at least 1, got {self.replicas!r}")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ConfigurationError("autoscaling needs both min_replicas and max_replicas")
        if self.min_replicas is not None:
            if not (_is_int(self.min_replicas) and _is_int(self.max_replicas)
                    and 1 <= self.min_replicas <= self.max_replicas):
                raise ConfigurationError(f"need 1 <= min_replicas <= max_replicas, got "
                                         f"{self.min_replicas!r} and {self.max_replicas!r}")
            if not self.resources.get("requests", {}).get("cpu"):
                raise ConfigurationError("autoscaling on CPU needs a CPU request: give resources="
                                         "{'requests': {'cpu': ...}} (URL: ?cpu=...)")
        if not _is_int(self.cpu_utilization) or not 1 <= self.cpu_utilization <= 100:
            raise ConfigurationError(f"cpu_utilization is a percentage, got {self.cpu_utilization!r}")
        unknown = set(self.resources) - {"requests", "limits"}
        if unknown:
            raise ConfigurationError(f"resources may hold 'requests' and 'limits', not {sorted(unknown)}")
        if self.image_pull_policy is not None and self.image_pull_policy not in PULL_POLICIES:
            raise ConfigurationError(f"image_pull_policy must be one of {', '.join(PULL_POLICIES)}")
        if self.metrics_port is not None and (not _is_int(self.metrics_port)
                                              or not 1 <= self.metrics_port <= 65535
                                              or self.metrics_port == WORKER_PORT):
            raise ConfigurationError(f"metrics_port must be a port from 1 to 65535 other than {WORKER_PORT}, "
                                     f"got {self.metrics_port!r}")
        if self.token_secret is not None and not _SECRET_NAME.match(self.token_secret):
            raise ConfigurationError(f"token_secret {self.token_secret!r} is not a valid Secret name")

    @property
    def initial_replicas(self) -> int:
        """How many workers a run starts with (and waits for)."""
        return self.min_replicas if self.min_replicas is not None else self.replicas


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def labels(run_id: str) -> dict[str, str]:
    return {**APP_LABELS, "app.kubernetes.io/instance": f"turbolift-{run_id}", RUN_ID_LABEL: run_id}


def pod_selector(run_id: str) -> dict[str, str]:
    """The labels that select a run's pods (Deployment and Service agree on it)."""
    return {"app.kubernetes.io/name": APP_LABELS["app.kubernetes.io/name"], RUN_ID_LABEL: run_id}


def _metadata(name: str, spec: WorkerSpec, run_id: str) -> dict:
    return {"name": name, "namespace": spec.namespace, "labels": labels(run_id)}


def _resources(spec: WorkerSpec) -> dict:
    # Quantities are strings in the API (a bare number would be accepted,
    # but strings keep "1" and 1.0 from meaning different things in YAML).
    return {kind: {name: str(value) for name, value in amounts.items()}
            for kind, amounts in spec.resources.items() if amounts}


def _probe(period: int, failures: int, timeout: int) -> dict:
    return {"grpc": {"port": WORKER_PORT, "service": HEALTH_SERVICE},
            "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": timeout}


def secret(spec: WorkerSpec, run_id: str, token: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": _metadata(Names.of(run_id).secret, spec, run_id),
        "type": "Opaque",
        "immutable": True,
        "data": {spec.token_key: base64.b64encode(token.encode()).decode()},
    }


def service(spec: WorkerSpec, run_id: str) -> dict:
    """A headless Service: its EndpointSlices list every ready pod, so the
    client can balance over pods itself (a ClusterIP would pin each gRPC
    connection to one pod)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(Names.of(run_id).service, spec, run_id),
        "spec": {
            "clusterIP": "None",
            "selector": pod_selector(run_id),
            "publishNotReadyAddresses": False,
            "ports": [{"name": PORT_NAME, "port": WORKER_PORT, "targetPort": PORT_NAME, "protocol": "TCP",
                       "appProtocol": "kubernetes.io/h2c"}],
        },
    }


def deployment(spec: WorkerSpec, run_id: str) -> dict:
    names = Names.of(run_id)
    secret_name = spec.token_secret or names.secret
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": list(WORKER_COMMAND),
        "env": [{"name": "TURBOLIFT_CACHE_DIR", "value": CACHE_DIR}],
        "ports": [{"name": PORT_NAME, "containerPort": WORKER_PORT, "protocol": "TCP"}],
        # Start-up allows for a slow first import; readiness and liveness are
        # lenient because a worker whose call threads are all busy answers
        # health checks late, and a pod marked unready is dropped by callers.
        "startupProbe": _probe(period=2, failures=60, timeout=2),
        "readinessProbe": _probe(period=5, failures=3, timeout=5),
        "livenessProbe": _probe(period=10, failures=6, timeout=5),
        "resources": _resources(spec),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "cache", "mountPath": CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    template_metadata: dict[str, Any] = {"labels": labels(run_id)}
    if spec.metrics_port is not None:
        container["command"] += ["--metrics-port", str(spec.metrics_port)]
        container["ports"].append({"name": "metrics", "containerPort": spec.metrics_port, "protocol": "TCP"})
        template_metadata["annotations"] = {"prometheus.io/scrape": "true",
                                            "prometheus.io/port": str(spec.metrics_port),
                                            "prometheus.io/path": "/metrics"}
    pod_spec = {
        # Workers run whatever their callers send: give that code no
        # credentials for the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": pod_selector(run_id)},
        }],
        "containers": [container],
        "volumes": [
            {"name": "token", "secret": {"secretName": secret_name, "defaultMode": 0o440,
                                         "items": [{"key": spec.token_key, "path": TOKEN_FILE_NAME}]}},
            {"name": "cache", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(names.deployment, spec, run_id),
        "spec": {
            "replicas": spec.initial_replicas,
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": pod_selector(run_id)},
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def autoscaler(spec: WorkerSpec, run_id: str) -> dict:
    names = Names.of(run_id)
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(names.autoscaler, spec, run_id),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.deployment},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": spec.cpu_utilization}}}],
        },
    }


def build(spec: WorkerSpec, run_id: str, token: Optional[str]) -> list[dict]:
    """Every object of a run, in creation order.

    ``token`` is the value for the run's own Secret; it must be given
    exactly when ``spec.token_secret`` is None (the Secret is then created).
    """
    check_run_id(run_id)
    if (token is None) != (spec.token_secret is not None):
        raise ValueError("give a token exactly when no token_secret is named")
    objects = []
    if token is not None:
        objects.append(secret(spec, run_id, token))
    objects += [service(spec, run_id), deployment(spec, run_id)]
    if spec.min_replicas is not None:
        objects.append(autoscaler(spec, run_id))
    return objects


__all__ = ["WorkerSpec", "Names", "build", "new_run_id", "run_selector", "labels", "pod_selector"]
