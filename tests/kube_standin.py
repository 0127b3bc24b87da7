"""A STAND-IN for the Kubernetes API server and its controllers. It is a fake.

No API server, kubelet or container engine can run on this machine, so this
class plays their part behind the boundary the platform talks to
(:class:`turbolift.platforms.kubernetes.api.Api`: create, read, list, delete, watch and
pod_log on plain dicts). What it runs is real: the "pods" of a Deployment are
real ``turbolift worker`` processes started from the Deployment's own
container command, with the token Secret's data written to the mounted
path, and a pod turns ready only when a real gRPC health check, made as the
Deployment's probe specifies, succeeds. Calls through the platform therefore
travel over real sockets to real workers.

What it simulates, and where it differs from Kubernetes:

* the API server: an object store with resourceVersions, label and field
  selectors, watches (which a test can expire with 410 Gone), 404/409 errors,
  and strict schema validation of created objects (kubernetes-validate) in
  place of the server's own validation;
* the Deployment controller (pods follow ``spec.replicas``; a test may make
  pod creation fail as a quota would) and garbage collection (deleting a
  Deployment deletes its pods, deleting a Service its EndpointSlices);
* the EndpointSlice controller: one slice per pod, because every "pod"
  listens on 127.0.0.1 with its own ephemeral port instead of having its
  own IP on the shared port;
* the scheduler: at most ``node_capacity`` pods run; the others stay Pending
  as Unschedulable;
* the kubelet: an "image" is a name registered in ``images`` (unknown names
  fail to pull); volumes are directories; ``--listen 0.0.0.0:PORT`` becomes
  ``127.0.0.1:0``; the startup/readiness probe runs once when the worker
  reports its address (liveness is not simulated); a container that exits
  is restarted after a short back-off (seconds, not Kubernetes' minutes);
* no HorizontalPodAutoscaler controller: a test scales with :meth:`scale`.
"""
from __future__ import annotations

import base64
import copy
import itertools
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import grpc
import kubernetes_validate
from grpc_health.v1 import health_pb2, health_pb2_grpc

from turbolift.platforms.kubernetes.api import KubeApiError

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MARKER = "TURBOLIFT_STANDIN_ID"


def turbolift_image(command: list[str]) -> list[str]:
    """An image with turbolift installed: ``turbolift`` is this interpreter's turbolift."""
    if command[:1] != ["turbolift"]:
        raise FileNotFoundError(command[0])
    return [sys.executable, "-m", "turbolift", *command[1:]]


def image_without_turbolift(command: list[str]) -> list[str]:
    """A plain Python image: the same command, but no turbolift to import (-S: no site-packages)."""
    return [sys.executable, "-S", "-I", "-m", *command]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _matches(labels: dict, selector: Optional[str]) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, eq, value = term.partition("=")
        if eq and labels.get(key) != value:
            return False
        if not eq and key not in labels:
            return False
    return True


def _field(obj: dict, path: str) -> object:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _fields_match(obj: dict, selector: Optional[str]) -> bool:
    for term in filter(None, (selector or "").split(",")):
        path, _, value = term.partition("=")
        if str(_field(obj, path)) != value:
            return False
    return True


class _Container:
    """The kubelet's record of one pod's container: its process and logs."""

    def __init__(self) -> None:
        self.process: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None
        self.log: list[str] = []
        self.previous_log: list[str] = []
        self.restarts = 0
        self.ready = False
        self.deleted = threading.Event()
        self.pids: list[int] = []


class StandInKubernetes:
    """A stand-in Kubernetes API with controllers whose pods are real local worker processes."""

    def __init__(self, root: Path, images: Optional[dict[str, Callable[[list[str]], list[str]]]] = None,
                 namespaces: tuple[str, ...] = ("default", "team-a"), node_capacity: int = 100,
                 termination_grace: float = 0.0) -> None:
        self.root = root
        self.images = dict(images or {})
        self.namespaces = set(namespaces)
        self.node_capacity = node_capacity
        self.termination_grace = termination_grace
        self.refuse: dict[str, KubeApiError] = {}     # kind -> error the API answers on create
        self.pod_creation_error: Optional[str] = None  # e.g. an exceeded quota
        self.created: list[dict] = []                  # every object created through the API, as sent
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[tuple[str, str, str], dict] = {}
        self._log: list[tuple[int, str, str, str, dict]] = []   # (version, type, kind, namespace, object)
        self._version = 0
        self._expiries = 0
        self._containers: dict[tuple[str, str], _Container] = {}
        self._threads: list[threading.Thread] = []
        self._names = itertools.count(1)
        self._closed = False
        self.marker = secrets.token_hex(8)

    # -- the API boundary (turbolift.platforms.kubernetes.api.Api) ------------------------------------
    def create(self, obj: dict) -> dict:
        kind, meta = obj["kind"], obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        self.created.append(copy.deepcopy(obj))
        if kind in self.refuse:
            raise self.refuse[kind]
        if namespace not in self.namespaces:
            raise KubeApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        try:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise KubeApiError(422, "Invalid", f"{kind} {name}: {exc.message}") from None
        with self._lock:
            if (kind, namespace, name) in self._objects:
                raise KubeApiError(409, "AlreadyExists", f'{kind.lower()}s "{name}" already exists')
            stored = self._store("ADDED", copy.deepcopy(obj))
        if kind == "Deployment":
            self._reconcile(namespace, name)
        elif kind == "Service":
            self._sync_slices(namespace)
        return copy.deepcopy(stored)

    def read(self, kind: str, namespace: str, name: str) -> dict:
        with self._lock:
            found = self._objects.get((kind, namespace, name))
            if found is None:
                raise KubeApiError(404, "NotFound", f'{kind.lower()}s "{name}" not found')
            return copy.deepcopy(found)

    def list(self, kind: str, namespace: str, label_selector: Optional[str] = None,
             field_selector: Optional[str] = None) -> tuple[list[dict], str]:
        with self._lock:
            items = [copy.deepcopy(obj) for (k, ns, _), obj in self._objects.items()
                     if k == kind and ns == namespace
                     and _matches(obj["metadata"].get("labels") or {}, label_selector)
                     and _fields_match(obj, field_selector)]
            return items, str(self._version)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._objects.get((kind, namespace, name))
            if obj is None:
                raise KubeApiError(404, "NotFound", f'{kind.lower()}s "{name}" not found')
            self._remove(kind, namespace, name)
        if kind == "Deployment":   # garbage collection of what it owns
            for pod in self._owned_pods(namespace, name):
                self._delete_pod(namespace, pod["metadata"]["name"], replace=False)
        elif kind == "Service":
            self._sync_slices(namespace)

    def watch(self, kind: str, namespace: str, label_selector: Optional[str], resource_version: str,
              timeout_seconds: int) -> "_Watch":
        return _Watch(self, kind, namespace, label_selector, int(resource_version or 0), timeout_seconds)

    def pod_log(self, namespace: str, name: str, previous: bool, tail_lines: int) -> str:
        with self._lock:
            container = self._containers.get((namespace, name))
            lines = [] if container is None else (container.previous_log if previous else container.log)
            return "".join(lines[-tail_lines:])

    # -- controls for tests ----------------------------------------------------------
    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """What ``kubectl scale`` or an autoscaler does."""
        with self._lock:
            deployment = copy.deepcopy(self._objects[("Deployment", namespace, name)])
            deployment["spec"]["replicas"] = replicas
            self._store("MODIFIED", deployment)
        self._reconcile(namespace, name)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Evict a pod (its Deployment then creates a replacement)."""
        self._delete_pod(namespace, name, replace=True)

    def kill_container(self, namespace: str, name: str) -> int:
        """SIGKILL a pod's worker process, as if it crashed; the kubelet restarts it. Returns the pid."""
        process = self._containers[(namespace, name)].process
        assert process is not None
        process.kill()
        return process.pid

    def expire_watches(self) -> None:
        """Make every open watch fail with 410 Gone, as when its version is compacted away."""
        with self._lock:
            self._expiries += 1
            self._changed.notify_all()

    def pods(self, namespace: str, label_selector: Optional[str] = None) -> list[dict]:
        return self.list("Pod", namespace, label_selector)[0]

    def pid_of(self, namespace: str, pod: str) -> Optional[int]:
        container = self._containers.get((namespace, pod))
        process = container.process if container else None
        return process.pid if process is not None and process.poll() is None else None

    def ready_pids(self, namespace: str) -> dict[str, int]:
        """Pod name -> pid of its worker, for the ready pods."""
        with self._lock:
            return {name: c.process.pid for (ns, name), c in self._containers.items()
                    if ns == namespace and c.ready and c.process is not None and not c.deleted.is_set()}

    def live_processes(self) -> list[int]:
        """Pids of the processes the "pods" run now, children included (found by their environment)."""
        needle = f"{MARKER}={self.marker}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    environ = handle.read().split(b"\0")
                with open(f"/proc/{entry}/stat") as handle:
                    state = handle.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in environ and state not in ("Z", "X"):
                found.append(int(entry))
        return found

    def ready_pods(self, namespace: str) -> set[str]:
        """Names of the pods whose worker is ready."""
        return set(self.ready_pids(namespace))

    def labelled(self, label_selector: str) -> list[str]:
        """``Kind/name`` of every object carrying the labels, whatever its kind or namespace."""
        with self._lock:
            return sorted(f"{k}/{n}" for (k, _, n), obj in self._objects.items()
                          if _matches(obj["metadata"].get("labels") or {}, label_selector))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            containers = list(self._containers.values())
            self._changed.notify_all()
        for container in containers:
            container.deleted.set()
            if container.process is not None and container.process.poll() is None:
                container.process.kill()
        for thread in self._threads:
            thread.join(timeout=10)

    # -- the store ----------------------------------------------------------------------
    def _store(self, event: str, obj: dict) -> dict:
        self._version += 1
        meta = obj["metadata"]
        meta.setdefault("uid", secrets.token_hex(8))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(self._version)
        self._objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        self._log.append((self._version, event, obj["kind"], meta["namespace"], copy.deepcopy(obj)))
        self._changed.notify_all()
        return obj

    def _remove(self, kind: str, namespace: str, name: str) -> None:
        obj = self._objects.pop((kind, namespace, name))
        self._version += 1
        self._log.append((self._version, "DELETED", kind, namespace, copy.deepcopy(obj)))
        self._changed.notify_all()

    def _event(self, namespace: str, pod: str, reason: str, message: str) -> None:
        with self._lock:
            self._store("ADDED", {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{pod}.{next(self._names)}", "namespace": namespace},
                "type": "Warning", "reason": reason, "message": message,
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
            })

    def _update_pod(self, namespace: str, name: str, change: Callable[[dict], None]) -> None:
        with self._lock:
            pod = self._objects.get(("Pod", namespace, name))
            if pod is None:
                return
            pod = copy.deepcopy(pod)
            change(pod)
            self._store("MODIFIED", pod)
        self._sync_slices(namespace)

    # -- the Deployment controller and the scheduler -----------------------------------
    def _owned_pods(self, namespace: str, deployment: str) -> list[dict]:
        with self._lock:
            return [obj for (k, ns, _), obj in self._objects.items()
                    if k == "Pod" and ns == namespace and not obj["metadata"].get("deletionTimestamp")
                    and any(ref.get("name") == deployment
                            for ref in obj["metadata"].get("ownerReferences", []))]

    def _reconcile(self, namespace: str, name: str) -> None:
        with self._lock:
            deployment = self._objects.get(("Deployment", namespace, name))
            if deployment is None or self._closed:
                return
            pods = sorted(self._owned_pods(namespace, name),
                          key=lambda p: int(p["metadata"]["resourceVersion"]))
            wanted = deployment["spec"].get("replicas", 1)
            if self.pod_creation_error and len(pods) < wanted:
                deployment = copy.deepcopy(deployment)
                deployment["status"] = {"conditions": [{
                    "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                    "message": self.pod_creation_error}]}
                self._store("MODIFIED", deployment)
                return
            template = deployment["spec"]["template"]
            create = [self._new_pod(namespace, name, template) for _ in range(wanted - len(pods))]
            surplus = pods[wanted:] if len(pods) > wanted else []
        for pod in create:
            self._schedule(namespace, pod)
        for pod in reversed(surplus):
            self._delete_pod(namespace, pod["metadata"]["name"], replace=False)

    def _new_pod(self, namespace: str, deployment: str, template: dict) -> dict:
        name = f"{deployment}-{secrets.token_hex(3)}"
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": dict(template["metadata"]["labels"], **{"pod-template-hash": "standin"}),
                         "ownerReferences": [{"kind": "ReplicaSet", "name": deployment}]},
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending"},
        }
        self._containers[(namespace, name)] = _Container()
        return self._store("ADDED", pod)

    def _schedule(self, namespace: str, pod: dict) -> None:
        name = pod["metadata"]["name"]
        with self._lock:
            running = sum(1 for (k, _, _), obj in self._objects.items() if k == "Pod"
                          and (obj.get("status") or {}).get("hostIP"))
        if running >= self.node_capacity:
            message = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available"
            self._update_pod(namespace, name, lambda p: p["status"].update(conditions=[{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]))
            self._event(namespace, name, "FailedScheduling", message)
            return
        self._update_pod(namespace, name, lambda p: p["status"].update(
            hostIP="127.0.0.1", podIP="127.0.0.1",
            conditions=[{"type": "PodScheduled", "status": "True"}]))
        thread = threading.Thread(target=self._kubelet, args=(namespace, name), daemon=True,
                                  name=f"standin-kubelet-{name}")
        self._threads.append(thread)
        thread.start()

    def _delete_pod(self, namespace: str, name: str, replace: bool) -> None:
        container = self._containers.get((namespace, name))
        with self._lock:
            pod = self._objects.get(("Pod", namespace, name))
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return
        # As in Kubernetes: the endpoint turns terminating first, then the
        # container gets SIGTERM (after the grace the test asked for).
        self._update_pod(namespace, name, lambda p: p["metadata"].update(deletionTimestamp=_now()))
        if replace:
            owner = pod["metadata"]["ownerReferences"][0]["name"]
            self._reconcile(namespace, owner)

        def finish() -> None:
            if container is not None:
                if self.termination_grace:
                    container.deleted.wait(self.termination_grace)
                container.deleted.set()
                process = container.process
                if process is not None and process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(5)
                    except subprocess.TimeoutExpired:
                        process.kill()
            with self._lock:
                if ("Pod", namespace, name) in self._objects:
                    self._remove("Pod", namespace, name)
            self._sync_slices(namespace)

        if self.termination_grace:
            thread = threading.Thread(target=finish, daemon=True)
            self._threads.append(thread)
            thread.start()
        else:
            finish()

    # -- the kubelet ---------------------------------------------------------------------
    def _set_container(self, namespace: str, name: str, image: str, container: _Container,
                       state: dict, **extra: object) -> None:
        def change(pod: dict) -> None:
            status = pod["status"]
            status["phase"] = "Running" if "running" in state else status.get("phase", "Pending")
            status["containerStatuses"] = [dict({
                "name": "worker", "image": image, "ready": container.ready,
                "restartCount": container.restarts, "state": state}, **extra)]
            conditions = [c for c in status.get("conditions", []) if c["type"] != "Ready"]
            status["conditions"] = conditions + [{"type": "Ready", "status": str(container.ready)}]
        self._update_pod(namespace, name, change)

    def _mount(self, namespace: str, name: str, pod: dict, directory: Path) -> Optional[dict[str, Path]]:
        """Volume name -> directory; None (and an event) when a volume cannot be mounted."""
        mounts = {}
        for volume in pod["spec"].get("volumes", []):
            path = directory / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secret_name = volume["secret"]["secretName"]
                try:
                    data = self.read("Secret", namespace, secret_name).get("data") or {}
                except KubeApiError:
                    self._event(namespace, name, "FailedMount", f'MountVolume.SetUp failed for volume '
                                f'"{volume["name"]}" : secret "{secret_name}" not found')
                    return None
                for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                    if item["key"] not in data:
                        self._event(namespace, name, "FailedMount", f"couldn't find key {item['key']} in "
                                    f"Secret {namespace}/{secret_name}")
                        return None
                    (path / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
            mounts[volume["name"]] = path
        return mounts

    def _kubelet(self, namespace: str, name: str) -> None:
        container = self._containers[(namespace, name)]
        pod = self.read("Pod", namespace, name)
        spec = pod["spec"]["containers"][0]
        image = spec["image"]
        if image not in self.images:
            message = f'rpc error: code = NotFound desc = failed to pull image "{image}": not found'
            self._set_container(namespace, name, image, container, {"waiting": {"reason": "ErrImagePull",
                                                                                "message": message}})
            self._event(namespace, name, "Failed", f'Failed to pull image "{image}": {message}')
            self._set_container(namespace, name, image, container, {"waiting": {
                "reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}})
            return
        directory = self.root / f"{namespace}-{name}"
        mounts = self._mount(namespace, name, pod, directory)
        if mounts is None:
            self._set_container(namespace, name, image, container,
                                {"waiting": {"reason": "ContainerCreating"}})
            return
        paths = {m["mountPath"]: str(mounts[m["name"]]) for m in spec.get("volumeMounts", [])}
        container_port = {p["name"]: p["containerPort"] for p in spec.get("ports", [])}
        probe = spec.get("startupProbe") or spec.get("readinessProbe") or {}

        def local(value: str) -> str:
            for mount_path, local_path in paths.items():
                if value == mount_path or value.startswith(mount_path + "/"):
                    return local_path + value[len(mount_path):]
            if value.startswith("0.0.0.0:"):
                return "127.0.0.1:0"   # every "pod" shares loopback: an ephemeral port stands for its IP
            return value

        command = [local(arg) for arg in [*spec.get("command", []), *spec.get("args", [])]]
        env = {k: v for k, v in os.environ.items() if k not in ("TURBOLIFT", "TURBOLIFT_CLUSTER")}
        # The container runtime sets HOSTNAME to the pod's name; the marker finds every process we started.
        env.update({"HOSTNAME": name, MARKER: self.marker})
        env.update({item["name"]: local(item["value"]) for item in spec.get("env", [])})
        listens_on = next((int(arg.rsplit(":", 1)[1]) for arg in spec.get("command", [])
                           if arg.startswith("0.0.0.0:")), None)
        while not container.deleted.is_set() and not self._closed:
            try:
                argv = self.images[image](command)
                process = subprocess.Popen(argv, cwd=directory, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)
            except FileNotFoundError as exc:
                self._set_container(namespace, name, image, container, {"waiting": {
                    "reason": "RunContainerError", "message": f'exec: "{exc}": executable file not found'}})
                return
            with self._lock:
                container.process = process
                container.pids.append(process.pid)
            self._set_container(namespace, name, image, container, {"running": {"startedAt": _now()}},
                                started=True)
            self._serve(namespace, name, image, container, process, probe, container_port, listens_on)
            process.wait()
            with self._lock:   # `kubectl logs --previous` shows the container that just ended
                container.ready = False
                container.address = None
                container.previous_log, container.log = container.log, []
            if container.deleted.is_set() or self._closed:
                return
            container.restarts += 1
            back_off = min(0.2 * 2 ** container.restarts, 3.0)
            self._set_container(namespace, name, image, container, {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {back_off:.1f}s restarting failed container=worker pod={name}"}},
                lastState={"terminated": {"exitCode": process.returncode, "reason": "Error"}})
            self._event(namespace, name, "BackOff", "Back-off restarting failed container worker")
            container.deleted.wait(back_off)

    def _serve(self, namespace: str, name: str, image: str, container: _Container, process: subprocess.Popen,
               probe: dict, container_port: dict, listens_on: Optional[int]) -> None:
        """Read the worker's output; once it listens, probe it as the pod spec says and mark it ready."""
        assert process.stdout is not None
        for line in process.stdout:
            with self._lock:
                container.log.append(line)
            if container.address is None and "listening on" in line:
                with self._lock:
                    container.address = line.rsplit(" ", 1)[1].strip()
                self._sync_slices(namespace)   # a running, not yet ready endpoint
                port = (probe.get("grpc") or {}).get("port")
                port = container_port.get(port, port)
                if port is not None and port == listens_on and self._probe(container.address, probe):
                    container.ready = True
                    self._set_container(namespace, name, image, container,
                                        {"running": {"startedAt": _now()}}, started=True)

    @staticmethod
    def _probe(address: str, probe: dict) -> bool:
        service = (probe.get("grpc") or {}).get("service", "")
        try:
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=10, wait_for_ready=True)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    # -- the EndpointSlice controller ---------------------------------------------------
    def _sync_slices(self, namespace: str) -> None:
        with self._lock:
            wanted: dict[str, dict] = {}
            for (kind, ns, service_name), service in list(self._objects.items()):
                if kind != "Service" or ns != namespace or not service["spec"].get("selector"):
                    continue
                service_port = service["spec"]["ports"][0]
                for (k, pns, pod_name), pod in list(self._objects.items()):
                    if k != "Pod" or pns != namespace:
                        continue
                    if not all(pod["metadata"]["labels"].get(key) == value
                               for key, value in service["spec"]["selector"].items()):
                        continue
                    container = self._containers.get((namespace, pod_name))
                    ports = {p["name"] for p in pod["spec"]["containers"][0].get("ports", [])}
                    if container is None or container.address is None \
                            or service_port["targetPort"] not in ports:
                        continue
                    terminating = bool(pod["metadata"].get("deletionTimestamp"))
                    ready = container.ready and not terminating
                    slice_name = f"{service_name}-{pod_name.rsplit('-', 1)[1]}"
                    wanted[slice_name] = {
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": slice_name, "namespace": namespace, "labels": {
                            **service["metadata"].get("labels", {}), SERVICE_NAME_LABEL: service_name,
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                        "addressType": "IPv4",
                        "endpoints": [{"addresses": ["127.0.0.1"],
                                       "conditions": {"ready": ready, "serving": ready and not terminating,
                                                      "terminating": terminating},
                                       "targetRef": {"kind": "Pod", "name": pod_name,
                                                     "namespace": namespace}}],
                        "ports": [{"name": service_port["name"], "protocol": "TCP",
                                   "port": int(container.address.rsplit(":", 1)[1])}],
                    }
            existing = {name: obj for (k, ns, name), obj in self._objects.items()
                        if k == "EndpointSlice" and ns == namespace}
            for slice_name in set(existing) - set(wanted):
                self._remove("EndpointSlice", namespace, slice_name)
            for slice_name, item in wanted.items():
                old = existing.get(slice_name)
                if old is None:
                    self._store("ADDED", item)
                elif {k: v for k, v in old.items() if k != "metadata"} != \
                        {k: v for k, v in item.items() if k != "metadata"}:
                    item["metadata"]["uid"] = old["metadata"]["uid"]
                    self._store("MODIFIED", item)


class _Watch:
    """One watch on the stand-in: events after ``version`` that match, until stopped or timed out."""

    def __init__(self, api: StandInKubernetes, kind: str, namespace: str, label_selector: Optional[str],
                 version: int, timeout_seconds: int) -> None:
        self._api = api
        self._kind = kind
        self._namespace = namespace
        self._selector = label_selector
        self._version = version
        self._deadline = time.monotonic() + timeout_seconds
        self._stopped = False
        self._expiries = api._expiries

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        api = self._api
        position = 0
        while True:
            with api._changed:
                while True:
                    if self._stopped or api._closed:
                        return
                    if api._expiries > self._expiries:
                        raise KubeApiError(410, "Expired", "too old resource version")
                    pending = api._log[position:]
                    if pending:
                        position = len(api._log)
                        break
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    api._changed.wait(remaining)
            for version, event, kind, namespace, obj in pending:
                if (version > self._version and kind == self._kind and namespace == self._namespace
                        and _matches(obj["metadata"].get("labels") or {}, self._selector)):
                    yield event, copy.deepcopy(obj)

    def stop(self) -> None:
        self._stopped = True
        with self._api._changed:
            self._api._changed.notify_all()


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll ``condition`` until it is truthy (tests only; the platform itself never polls)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)

