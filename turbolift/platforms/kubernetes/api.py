"""The one place that talks to the Kubernetes API, through the official client.

:class:`KubeApi` is the boundary between the platform and Kubernetes: a
handful of operations on plain dicts in the API's JSON form (create, read,
list, delete, watch, read a pod's log). Everything the platform knows about
Kubernetes semantics lives above it; everything about the client library
lives here. Tests substitute a stand-in with the same methods.

The ``kubernetes`` package is imported when a :class:`KubeApi` is created,
never when this module is imported (``import turbolift`` stays light).
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Optional, Protocol

from ...errors import ClusterError, ConfigurationError

# kind -> (API class, snake-case resource name used in method names, model class)
KINDS = {
    "Secret": ("CoreV1Api", "secret", "V1Secret"),
    "Service": ("CoreV1Api", "service", "V1Service"),
    "Deployment": ("AppsV1Api", "deployment", "V1Deployment"),
    "HorizontalPodAutoscaler": ("AutoscalingV2Api", "horizontal_pod_autoscaler", "V2HorizontalPodAutoscaler"),
    "Pod": ("CoreV1Api", "pod", "V1Pod"),
    "Event": ("CoreV1Api", "event", "CoreV1Event"),
    "EndpointSlice": ("DiscoveryV1Api", "endpoint_slice", "V1EndpointSlice"),
}


class KubeApiError(ClusterError):
    """The API refused or could not be reached (``status`` 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"Kubernetes API: {reason} ({status}): {message}" if status
                         else f"Kubernetes API unreachable: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class WatchStream(Protocol):
    """Events ``(type, object)`` of one watch; ``stop`` ends it from any thread."""

    def __iter__(self) -> Iterator[tuple[str, dict]]: ...

    def stop(self) -> None: ...


class Api(Protocol):
    """What the platform needs from Kubernetes (the real one or a stand-in)."""

    def create(self, obj: dict) -> dict: ...

    def read(self, kind: str, namespace: str, name: str) -> dict: ...

    def list(self, kind: str, namespace: str, label_selector: Optional[str] = None,
             field_selector: Optional[str] = None) -> tuple[list[dict], str]: ...

    def delete(self, kind: str, namespace: str, name: str) -> None: ...

    def watch(self, kind: str, namespace: str, label_selector: Optional[str], resource_version: str,
              timeout_seconds: int) -> WatchStream: ...

    def pod_log(self, namespace: str, name: str, previous: bool, tail_lines: int) -> str: ...


class KubeApi:
    """The real API: from ``kubeconfig``/``context``, else in-cluster, else the default kubeconfig."""

    def __init__(self, kubeconfig: Optional[str] = None, context: Optional[str] = None) -> None:
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            raise ConfigurationError("the Kubernetes platform needs the official client: "
                                     "pip install 'turbolift[kubernetes]'") from None
        from kubernetes import client, config

        try:
            if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                self._client = client.ApiClient(configuration)
            else:
                self._client = config.new_client_from_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError) as exc:
            raise ConfigurationError(
                f"no usable Kubernetes configuration ({exc}): set KUBECONFIG, name a kubeconfig file "
                "(kubeconfig=... in Python, ?kubeconfig=FILE in a k8s:// URL, --kubeconfig on the command "
                "line), or run inside a cluster") from None
        self.host = self._client.configuration.host
        self._apis: dict[str, Any] = {}

    def _api(self, api_class: str) -> Any:
        from kubernetes import client

        if api_class not in self._apis:
            self._apis[api_class] = getattr(client, api_class)(self._client)
        return self._apis[api_class]

    def _method(self, verb: str, kind: str) -> Any:
        api_class, resource, _ = KINDS[kind]
        return getattr(self._api(api_class), f"{verb}_namespaced_{resource}")

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return function(*args, **kwargs)
        except ApiException as exc:
            raise _api_error(exc) from None
        except (HTTPError, OSError) as exc:
            raise KubeApiError(0, "Unreachable", f"{self.host}: {exc}") from None

    def _plain(self, model: Any) -> Any:
        return self._client.sanitize_for_serialization(model)

    def create(self, obj: dict) -> dict:
        from kubernetes import client

        kind = obj["kind"]
        model_class = getattr(client, KINDS[kind][2])
        # Newer clients (pydantic models) want a model as the body; older ones take the dict as it is.
        body = model_class.from_dict(obj) if hasattr(model_class, "from_dict") else obj
        created = self._call(self._method("create", kind), obj["metadata"]["namespace"], body)
        return self._plain(created)

    def read(self, kind: str, namespace: str, name: str) -> dict:
        return self._plain(self._call(self._method("read", kind), name, namespace))

    def list(self, kind: str, namespace: str, label_selector: Optional[str] = None,
             field_selector: Optional[str] = None) -> tuple[list[dict], str]:
        found = self._call(self._method("list", kind), namespace, label_selector=label_selector,
                           field_selector=field_selector)
        plain = self._plain(found)
        return plain.get("items") or [], plain.get("metadata", {}).get("resourceVersion", "")

    def delete(self, kind: str, namespace: str, name: str) -> None:
        # Background propagation: the garbage collector removes what the
        # object owns (a Deployment's ReplicaSets and Pods, a Service's
        # EndpointSlices) without making us wait for it.
        self._call(self._method("delete", kind), name, namespace, propagation_policy="Background")

    def watch(self, kind: str, namespace: str, label_selector: Optional[str], resource_version: str,
              timeout_seconds: int) -> WatchStream:
        return _Watch(self, self._method("list", kind), namespace, label_selector, resource_version,
                      timeout_seconds)

    def pod_log(self, namespace: str, name: str, previous: bool, tail_lines: int) -> str:
        text = self._call(self._api("CoreV1Api").read_namespaced_pod_log, name, namespace,
                          previous=previous, tail_lines=tail_lines)
        return text if isinstance(text, str) else str(text)


class _Watch:
    """A ``kubernetes.watch.Watch`` over one list call, yielding plain dicts."""

    def __init__(self, api: KubeApi, list_method: Any, namespace: str, label_selector: Optional[str],
                 resource_version: str, timeout_seconds: int) -> None:
        from kubernetes import watch

        self._api = api
        self._watch = watch.Watch()
        self._args = (list_method, namespace)
        self._kwargs = {"label_selector": label_selector, "resource_version": resource_version or None,
                        "timeout_seconds": timeout_seconds,
                        # a dead connection must not hang the follower forever
                        "_request_timeout": timeout_seconds + 30}

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        events = self._watch.stream(*self._args, **self._kwargs)
        while True:
            event = self._api._call(next, events, None)
            if event is None:
                return
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                yield event["type"], event["raw_object"]

    def stop(self) -> None:
        self._watch.stop()


def _api_error(exc: Any) -> KubeApiError:
    message = exc.reason or ""
    try:
        body = json.loads(exc.body or "")
        message = body.get("message") or message
        reason = body.get("reason") or exc.reason or ""
    except (ValueError, AttributeError):
        reason = exc.reason or ""
    return KubeApiError(int(exc.status or 0), str(reason), str(message))
