"""The Kubernetes platform.

This machine has no container engine and no cluster, so what needs one is
checked in two other ways, and the tests say which:

* the objects are checked against the official Kubernetes JSON schemas in
  strict mode (kubernetes-validate) and against the official client's
  models, and for what makes them work together (gRPC probes on the worker
  port, labels and selectors, a headless Service, the token's path);
* readiness, endpoint following and cleanup run against
  :class:`kube_standin.StandInKubernetes`, a STAND-IN for the API server and
  its controllers (a fake, stated as such) whose "pods" are real local
  ``turbolift worker`` processes started from the Deployment's own command,
  so the calls themselves are real;
* ``test_real_cluster`` goes from nothing to a distributed call and back to
  nothing on a real cluster when ``TURBOLIFT_TEST_KUBECONFIG`` is set.
"""
from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import kube_payload
import kubernetes_validate
import pytest
import yaml
from conftest import REPO, child_env, wait_gone
from kube_standin import StandInKubernetes, image_without_turbolift, turbolift_image, wait_until
from kubernetes.client import ApiClient, models

from turbolift import _runtime, on
from turbolift._caller import status as _status
from turbolift._enabling import switch
from turbolift._wire.protocol import SERVICE_NAME
from turbolift.errors import ClusterError, ConfigurationError
from turbolift.kubernetes import Kubernetes, ready_addresses, resources_for
from turbolift.platforms import resolve
from turbolift.platforms.kubernetes import command as _kube_cli
from turbolift.platforms.kubernetes import diagnose as _kube_diagnose
from turbolift.platforms.kubernetes import objects as kobjects
from turbolift.platforms.kubernetes.api import KubeApi, KubeApiError

IMAGE = "registry.example/turbolift-worker:test"
NS = "team-a"
MODELS = {"Secret": "V1Secret", "Service": "V1Service", "Deployment": "V1Deployment",
          "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler"}
# gRPC probes are GA from Kubernetes 1.27: the oldest version the objects must suit, and the newest shipped.
VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
VARIANTS = {
    "defaults": {},
    "autoscaled": {"min_replicas": 2, "max_replicas": 6, "cpu_utilization": 60},
    "user secret": {"token_secret": "team-token", "token_key": "worker-token"},
    "sized": {"resources": resources_for("2", "4Gi"), "image_pull_policy": "IfNotPresent", "replicas": 5},
    "metrics": {"metrics_port": 9100},
}


def objects_of(variant: str, run_id: str = "r1") -> list[dict]:
    return Kubernetes(NS, image=IMAGE, run_id=run_id, **VARIANTS[variant]).objects()


def by_kind(objects: list[dict]) -> dict[str, dict]:
    found = {obj["kind"]: obj for obj in objects}
    assert len(found) == len(objects), "one object of each kind"
    return found


def worker_container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# -- the objects -------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_strictly_against_the_official_schemas(variant):
    objects = objects_of(variant)
    assert {obj["kind"] for obj in objects} >= {"Service", "Deployment"}
    for obj in objects:
        for version in VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_with_metrics_the_pods_are_annotated_for_scraping_and_serve_the_port():
    template = by_kind(objects_of("metrics"))["Deployment"]["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9100", "prometheus.io/path": "/metrics"}
    container = worker_container(by_kind(objects_of("metrics"))["Deployment"])
    assert container["command"][-2:] == ["--metrics-port", "9100"]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    assert "annotations" not in by_kind(objects_of("defaults"))["Deployment"]["spec"]["template"]["metadata"]


def test_strict_validation_catches_a_misspelled_field():
    """Control: the validation above would fail on a typo, so its passing means something."""
    deployment = by_kind(objects_of("defaults"))["Deployment"]
    typo = copy.deepcopy(deployment)
    worker_container(typo)["readinesProbe"] = worker_container(typo).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(typo, VERSIONS[-1], strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "2"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, VERSIONS[-1], strict=True)


def to_model(client: ApiClient, obj: dict, model: str) -> object:
    """Deserialise as the client does an API response (its signature changed across client versions)."""
    try:
        return client.deserialize(json.dumps(obj), model, "application/json")
    except TypeError:   # kubernetes < 35: deserialize(response, response_type)
        return client.deserialize(SimpleNamespace(data=json.dumps(obj)), model)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_round_trips_through_the_official_client_models(variant):
    client = ApiClient()
    for obj in objects_of(variant):
        model = to_model(client, obj, MODELS[obj["kind"]])
        assert type(model).__name__ == MODELS[obj["kind"]]
        assert client.sanitize_for_serialization(model) == obj
        model_class = getattr(models, MODELS[obj["kind"]])
        if hasattr(model_class, "from_dict"):   # the body KubeApi.create sends with newer clients
            assert client.sanitize_for_serialization(model_class.from_dict(obj)) == obj
    # Control: a field the model does not know is lost on the way, and the comparison sees it.
    service = by_kind(objects_of(variant))["Service"]
    service["spec"]["clusterIp"] = "None"
    model = to_model(client, service, "V1Service")
    assert client.sanitize_for_serialization(model) != service


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_are_native_grpc_probes_on_the_port_the_worker_listens_on(variant):
    container = worker_container(by_kind(objects_of(variant))["Deployment"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    command = container["command"]
    assert command[:6] == ["turbolift", "worker", "--listen", "0.0.0.0:50051",
                           "--token-file", "/var/run/turbolift/token"]
    listen_port = int(command[command.index("--listen") + 1].rsplit(":", 1)[1])
    assert ports == {"grpc": listen_port, **({"metrics": 9100} if variant == "metrics" else {})}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        handlers = set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"}
        assert handlers == {"grpc"}, kind
        assert probe["grpc"]["port"] == listen_port
        # the service the worker itself registers in grpc.health.v1
        assert probe["grpc"]["service"] == SERVICE_NAME


@pytest.mark.parametrize("variant", VARIANTS)
def test_labels_and_selectors_agree(variant):
    objects = objects_of(variant, run_id="run-42")
    kinds = by_kind(objects)
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[kobjects.RUN_ID_LABEL] == "run-42"
        assert labels["app.kubernetes.io/managed-by"] == "turbolift"
        assert obj["metadata"]["namespace"] == NS
    deployment, service = kinds["Deployment"], kinds["Service"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"] == selector
    assert pod_labels[kobjects.RUN_ID_LABEL] == "run-42"
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"] == selector
    # the Service's target port is the container's named port
    container_ports = {port["name"] for port in worker_container(deployment)["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in container_ports
    # the token volume names the Secret that holds it, under the key the volume maps to the file
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    options = VARIANTS[variant]
    if "token_secret" in options:
        assert "Secret" not in kinds
        assert volume["secret"]["secretName"] == options["token_secret"]
        assert volume["secret"]["items"] == [{"key": options["token_key"], "path": "token"}]
    else:
        assert volume["secret"]["secretName"] == kinds["Secret"]["metadata"]["name"]
        assert list(kinds["Secret"]["data"]) == [volume["secret"]["items"][0]["key"]]
    (mount,) = [m for m in worker_container(deployment)["volumeMounts"] if m["name"] == volume["name"]]
    assert f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}" == kobjects.TOKEN_PATH
    if "min_replicas" in options:
        target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert deployment["spec"]["replicas"] == options["min_replicas"]
    else:
        assert "HorizontalPodAutoscaler" not in kinds


def test_the_service_is_headless():
    service = by_kind(objects_of("defaults"))["Service"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["publishNotReadyAddresses"] is False


def test_workers_run_unprivileged_with_requests_and_limits():
    deployment = by_kind(objects_of("sized"))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False   # user code gets no API credentials
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    assert container["imagePullPolicy"] == "IfNotPresent"
    # with a read-only root, the bundle cache and /tmp must be writable volumes
    cache = {e["name"]: e["value"] for e in container["env"]}["TURBOLIFT_CACHE_DIR"]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert cache in writable and "/tmp" in writable


def test_each_run_has_its_own_id_and_a_fresh_token_in_its_secret():
    first, second = Kubernetes(NS, image=IMAGE), Kubernetes(NS, image=IMAGE)
    assert first.run_id != second.run_id and first.token != second.token
    assert len(first.token) >= 32
    for cluster in (first, second):
        secret = by_kind(cluster.objects())["Secret"]
        assert base64.b64decode(secret["data"]["token"]).decode() == cluster.token
    given = Kubernetes(NS, image=IMAGE, token="chosen-token")
    assert base64.b64decode(by_kind(given.objects())["Secret"]["data"]["token"]) == b"chosen-token"


def test_the_k8s_url_resolves_to_the_kubernetes_platform():
    cluster = resolve(f"k8s://{NS}?image={IMAGE}&replicas=4&cpu=2&memory=4Gi&min_replicas=2&max_replicas=8"
                      "&pull_policy=Always&run_id=abc&timeout=120&token_secret=team-token")
    assert isinstance(cluster, Kubernetes)
    assert (cluster.namespace, cluster.run_id, cluster.start_timeout) == (NS, "abc", 120.0)
    kinds = by_kind(cluster.objects())
    container = worker_container(kinds["Deployment"])
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 8
    assert "Secret" not in kinds
    assert Kubernetes.from_url("k8s://?image=x").namespace == "default"


@pytest.mark.parametrize("make, message", [
    (lambda: Kubernetes(NS, image=""), "needs the worker image"),
    (lambda: Kubernetes(NS, image=IMAGE, replicas=0), "at least 1"),
    (lambda: Kubernetes(NS, image=IMAGE, min_replicas=3, max_replicas=2), "min_replicas <= max_replicas"),
    (lambda: Kubernetes(NS, image=IMAGE, min_replicas=3), "both min_replicas and max_replicas"),
    (lambda: Kubernetes(NS, image=IMAGE, min_replicas=1, max_replicas=2, resources={"limits": {"cpu": "1"}}),
     "needs a CPU request"),
    (lambda: Kubernetes("Team_A", image=IMAGE), "not a valid Kubernetes namespace"),
    (lambda: Kubernetes(NS, image=IMAGE, run_id="Not Valid"), "run id"),
    (lambda: Kubernetes(NS, attach=True), "needs the run_id"),
    (lambda: resolve(f"k8s://{NS}?image=x&replica=3"), "unknown option(s) replica"),
    (lambda: resolve(f"k8s://{NS}?image=x&replicas=many"), "bad value 'many' for replicas"),
    (lambda: resolve(f"k8s://{NS}?image=x&replicas=2&replicas=3"), "given twice"),
])
def test_configuration_mistakes_are_named(make, message, monkeypatch):
    monkeypatch.delenv("TURBOLIFT_IMAGE", raising=False)
    with pytest.raises(ConfigurationError) as info:
        make()
    assert message in str(info.value)


def test_importing_the_platform_and_building_manifests_stays_light():
    code = (
        "import sys, turbolift\n"
        "from turbolift.platforms import resolve\n"
        "from turbolift.platforms.kubernetes import command as _kube_cli\n"
        "cluster = resolve('k8s://team-a?image=x')\n"
        "assert turbolift.Kubernetes is type(cluster)\n"
        "_kube_cli.render(cluster.objects(), 'json')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'grpc', 'urllib3'))\n"
        "print(heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_endpoint_slices_give_the_ready_pods_addresses():
    item = {"addressType": "IPv4", "ports": [{"name": "other", "port": 9}, {"name": "grpc", "port": 50051}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.2"], "conditions": {}},                     # nil ready means ready
                {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": True, "terminating": True}},
                {"addresses": ["10.0.0.5", "10.0.0.6"], "conditions": {"ready": True}}]}
    assert ready_addresses(item) == ["10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.5:50051"]
    six = {"addressType": "IPv6", "ports": [{"name": "grpc", "port": 50051}],
           "endpoints": [{"addresses": ["fd00::7"], "conditions": {"ready": True}}]}
    assert ready_addresses(six) == ["[fd00::7]:50051"]
    assert ready_addresses(dict(six, addressType="FQDN")) == []
    assert ready_addresses(dict(item, ports=[{"name": "http", "port": 80}])) == []


def test_the_not_ready_report_explains_each_kind_of_failure():
    def pod(name, **status):
        return {"metadata": {"name": name}, "status": status}

    text = _kube_diagnose.report(
        run_id="r1", namespace=NS, ready=1, wanted=4, waited=300.0,
        deployment={"status": {"conditions": [{"type": "ReplicaFailure", "status": "True",
                                               "reason": "FailedCreate",
                                               "message": "exceeded quota: compute"}]}},
        pods=[
            pod("p-oom", containerStatuses=[{"ready": False, "restartCount": 3, "state": {"waiting": {
                "reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 137,
                                                                              "reason": "OOMKilled"}}}]),
            pod("p-secret", containerStatuses=[{"ready": False, "state": {"waiting": {
                "reason": "CreateContainerConfigError", "message": 'secret "team-token" not found'}}}]),
            pod("p-probe", phase="Running", containerStatuses=[{"ready": False, "state": {"running": {}}}]),
        ],
        events=[{"reason": "Unhealthy", "message": "Readiness probe failed: timeout",
                 "involvedObject": {"kind": "Pod", "name": "p-probe"}}])
    assert text.startswith("1 of 4 Kubernetes workers of run r1 in namespace team-a ready after 300s.")
    for expected in ("FailedCreate: exceeded quota", "exit code 137 (OOMKilled)", "raise the memory limit",
                     'secret "team-token" not found', "running but not ready", "gRPC health check fails",
                     "Readiness probe failed", "kubectl -n team-a describe pods -l turbolift.dev/run-id=r1"):
        assert expected in text


# -- the manifests command -----------------------------------------------------------

MANIFEST_ARGS = ["--namespace", NS, "--image", "registry.example/never-pulled:1", "--replicas", "3",
                 "--cpu", "2", "--memory", "1Gi", "--min-replicas", "2", "--max-replicas", "5",
                 "--run-id", "r1"]
MANIFEST_URL = (f"k8s://{NS}?image=registry.example/never-pulled:1&replicas=3&cpu=2&memory=1Gi"
                "&min_replicas=2&max_replicas=5&run_id=r1")


def _manifests(*args: str, token_file: Path, python_code: str = "") -> subprocess.CompletedProcess:
    argv = ["kube", "manifests", *MANIFEST_ARGS, "--token-file", str(token_file), *args]
    command = ([sys.executable, "-c", python_code, *argv] if python_code
               else [sys.executable, "-m", "turbolift", *argv])
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def test_the_manifests_command_prints_exactly_what_the_platform_creates(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("the-token\n")
    printed = list(yaml.safe_load_all(_manifests(token_file=token_file).stdout))
    as_json = json.loads(_manifests("--output", "json", token_file=token_file).stdout)
    assert as_json["kind"] == "List" and as_json["items"] == printed
    without_pyyaml = ("import sys; sys.modules['yaml'] = None; "   # `import yaml` now fails
                      "from turbolift.cli import main; sys.exit(main())")
    fallback = _manifests(token_file=token_file, python_code=without_pyyaml).stdout
    assert fallback.startswith("---\n{") and list(yaml.safe_load_all(fallback)) == printed

    # The platform, configured through the URL form, sends the API the very same objects.
    standin = StandInKubernetes(tmp_path / "standin")   # no image registered: no pod ever runs
    cluster = Kubernetes.from_url(f"{MANIFEST_URL}&token_file={token_file}", api=standin)
    try:
        cluster.start()
        assert standin.created == printed
        assert [o["kind"] for o in printed] == ["Secret", "Service", "Deployment", "HorizontalPodAutoscaler"]
    finally:
        cluster.stop()
        standin.close()


def test_the_manifests_command_needs_an_image():
    env = {k: v for k, v in os.environ.items() if k != "TURBOLIFT_IMAGE"}
    result = subprocess.run([sys.executable, "-m", "turbolift", "kube", "manifests"], capture_output=True,
                            text=True, cwd=REPO, env=env, timeout=60)
    assert result.returncode == 2 and "--image IMAGE" in result.stderr and not result.stdout


# -- against the stand-in API, with real worker processes as pods --------------------

@pytest.fixture
def standin(tmp_path):
    api = StandInKubernetes(tmp_path / "standin", images={IMAGE: turbolift_image})
    yield api
    api.close()


@pytest.fixture
def distributed():
    yield
    _runtime.disable()


def spread(where, pods: int) -> set[str]:
    """The pods that concurrent calls reached (calls go to the worker with the fewest in flight)."""
    futures = [where.submit(0.3) for _ in range(3 * pods)]
    return {future.result(timeout=60) for future in futures}


def test_calls_run_on_the_pods_and_follow_them_as_they_come_and_go(standin, distributed):
    cluster = Kubernetes(NS, image=IMAGE, replicas=2, api=standin, start_timeout=60)
    switch.enable(cluster)
    where = on(cluster)(kube_payload.where)
    assert on(cluster)(kube_payload.square)(7) == 49
    pods = standin.ready_pods(NS)
    assert len(pods) == 2 and all(p.startswith(cluster.names.deployment + "-") for p in pods)
    assert spread(where, 2) == pods

    published: list[list[str]] = []
    cluster.subscribe(published.append)

    def settled(count: int) -> bool:
        """The platform published ``count`` addresses and the stand-in agrees on the ready pods."""
        return bool(published) and len(published[-1]) == count == len(standin.ready_pods(NS)) \
            and published[-1] == cluster.addresses()

    standin.scale(NS, cluster.names.deployment, 3)                 # scaled up: a third pod joins
    wait_until(lambda: settled(3), what="three ready pods published")
    assert spread(where, 3) == standin.ready_pods(NS)

    evicted = sorted(standin.ready_pods(NS))[0]                    # evicted: a replacement takes its place
    before = set(cluster.addresses())
    standin.delete_pod(NS, evicted)
    wait_until(lambda: settled(3) and evicted not in standin.ready_pods(NS), what="a replacement pod")
    assert set(cluster.addresses()) != before
    assert spread(where, 3) == standin.ready_pods(NS)

    crashed = sorted(standin.ready_pods(NS))[0]                    # its worker crashed: restarted
    old = set(cluster.addresses())
    standin.kill_container(NS, crashed)
    wait_until(lambda: settled(3) and set(cluster.addresses()) != old, what="the restarted worker")
    assert spread(where, 3) == standin.ready_pods(NS)

    standin.expire_watches()                                       # the watch expires: listed again
    standin.scale(NS, cluster.names.deployment, 1)
    wait_until(lambda: settled(1), what="one pod published")
    assert spread(where, 1) == standin.ready_pods(NS)

    _runtime.disable()                                             # stop(): back to nothing
    assert standin.labelled(kobjects.run_selector(cluster.run_id)) == []
    assert wait_gone(standin.live_processes()) == []


def test_stop_deletes_everything_with_the_run_id_and_nothing_else(standin, tmp_path):
    other = Kubernetes(NS, image="registry.example/never-pulled:1", replicas=1, api=standin)
    other.start()
    standin.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated", "namespace": NS},
                    "data": {"k": "dg=="}})
    cluster = Kubernetes(NS, image=IMAGE, replicas=2, api=standin, min_replicas=2, max_replicas=3)
    assert len(cluster.wait_ready(60)) == 2
    mine = standin.labelled(kobjects.run_selector(cluster.run_id))
    assert {name.split("/")[0] for name in mine} == {
        "Secret", "Service", "Deployment", "HorizontalPodAutoscaler", "Pod", "EndpointSlice"}
    assert standin.live_processes()
    cluster.stop()
    cluster.stop()  # idempotent
    assert standin.labelled(kobjects.run_selector(cluster.run_id)) == []
    assert wait_gone(standin.live_processes()) == []
    assert standin.read("Secret", NS, "unrelated")
    assert standin.labelled(kobjects.run_selector(other.run_id))
    other.stop()


def test_a_user_managed_token_secret_is_read_and_left_alone(standin, distributed):
    cluster = Kubernetes(NS, image=IMAGE, replicas=1, api=standin, token_secret="team-token",
                         token_key="worker-token")
    with pytest.raises(ClusterError, match=r"Secret 'team-token' not found in namespace team-a: create it "
                                           r"with `kubectl -n team-a create secret generic team-token "
                                           r"--from-file=worker-token=TOKEN_FILE`"):
        _ = cluster.token
    token = "a-token-the-team-manages"
    standin.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-token", "namespace": NS},
                    "data": {"worker-token": base64.b64encode(token.encode()).decode()}})
    assert cluster.token == token
    switch.enable(cluster)
    assert on(cluster)(kube_payload.square)(9) == 81   # the pod got the same token from the Secret
    _runtime.disable()
    assert standin.read("Secret", NS, "team-token")


def test_an_image_that_cannot_be_pulled_is_named_when_time_runs_out(standin):
    cluster = Kubernetes(NS, image="registry.example/typo:1", replicas=1, api=standin, start_timeout=2)
    with pytest.raises(ClusterError) as info:
        cluster.wait_ready(2)
    text = str(info.value)
    assert text.startswith("0 of 1 Kubernetes workers")
    assert "cannot pull image 'registry.example/typo:1' (ImagePullBackOff)" in text
    assert "kind load docker-image" in text
    cluster.stop()
    assert standin.labelled(kobjects.run_selector(cluster.run_id)) == []


def test_a_worker_that_crashes_at_start_is_reported_with_its_output(standin):
    standin.images["python:3.11-slim"] = image_without_turbolift   # a plain image: no turbolift in it
    cluster = Kubernetes(NS, image="python:3.11-slim", replicas=1, api=standin, start_timeout=4)
    with pytest.raises(ClusterError) as info:
        cluster.wait_ready(4)
    text = str(info.value)
    assert "crashes at start (CrashLoopBackOff): exit code 1" in text
    assert "No module named turbolift" in text          # the real output of the real failed command
    assert "Is `turbolift` installed in the image" in text
    cluster.stop()
    assert wait_gone(standin.live_processes()) == []


def test_pods_no_node_can_take_are_reported(tmp_path):
    standin = StandInKubernetes(tmp_path / "standin", images={IMAGE: turbolift_image}, node_capacity=1)
    cluster = Kubernetes(NS, image=IMAGE, replicas=2, api=standin, start_timeout=8)
    try:
        with pytest.raises(ClusterError) as info:
            cluster.wait_ready(8)
        text = str(info.value)
        assert text.startswith("1 of 2 Kubernetes workers")
        assert "cannot be scheduled (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu" in text
        assert "lower the requests" in text
    finally:
        cluster.stop()
        standin.close()


def test_pods_that_may_not_be_created_are_reported(standin):
    standin.pod_creation_error = ('pods "turbolift-x" is forbidden: exceeded quota: compute, '
                                  'requested: limits.cpu=1, used: limits.cpu=4, limited: limits.cpu=4')
    cluster = Kubernetes(NS, image=IMAGE, replicas=1, api=standin, start_timeout=1)
    with pytest.raises(ClusterError, match="deployment: FailedCreate: .*exceeded quota"):
        cluster.wait_ready(1)
    cluster.stop()


def test_a_refused_start_leaves_nothing_behind_and_says_what_to_check(standin):
    standin.refuse["Deployment"] = KubeApiError(
        403, "Forbidden", 'deployments.apps is forbidden: User "dev" cannot create resource "deployments"')
    cluster = Kubernetes(NS, image=IMAGE, api=standin)
    with pytest.raises(ClusterError) as info:
        cluster.start()
    assert "cannot create resource" in str(info.value)
    assert f"kubectl auth can-i create deployments -n {NS}" in str(info.value)
    assert [o["kind"] for o in standin.created] == ["Secret", "Service", "Deployment"]
    assert standin.labelled(kobjects.run_selector(cluster.run_id)) == []   # Secret and Service rolled back

    missing = Kubernetes("nowhere", image=IMAGE, api=standin)
    with pytest.raises(ClusterError, match="kubectl create namespace nowhere"):
        missing.start()


def test_manifests_applied_by_hand_can_be_attached_to_and_cleaned_up(standin, distributed, capsys):
    manifests = ["manifests", "-n", NS, "--image", IMAGE, "--replicas", "2", "--run-id", "applied"]
    assert _kube_cli.main(manifests) == 0
    for obj in yaml.safe_load_all(capsys.readouterr().out):   # what `kubectl apply -f -` would do
        standin.create(obj)
    cluster = Kubernetes.from_url(f"k8s://{NS}?attach=1&run_id=applied", api=standin)
    switch.enable(cluster)
    where = on(cluster)(kube_payload.where)
    assert spread(where, 2) == standin.ready_pods(NS)
    _runtime.disable()
    assert standin.labelled(kobjects.run_selector("applied"))       # attaching deletes nothing
    rows = _status.describe_cluster(Kubernetes.from_url(f"k8s://{NS}?attach=1&run_id=applied", api=standin))
    assert len(rows) == 2 and all("error" not in row and row["calls_served"] >= 1 for row in rows), rows
    assert standin.labelled(kobjects.run_selector("applied"))       # nor does looking at it

    crashed = Kubernetes(NS, image="registry.example/never-pulled:1", api=standin, run_id="crashed")
    crashed.start()   # and never stopped, as if its program had been killed
    assert _kube_cli.main(["cleanup", "-n", NS, "--run-id", "applied"], api=standin) == 0
    out = capsys.readouterr().out
    assert "deleted deployment/turbolift-applied" in out and "deleted secret/turbolift-applied-token" in out
    assert standin.labelled(kobjects.run_selector("applied")) == []
    assert standin.labelled(kobjects.run_selector("crashed"))
    assert _kube_cli.main(["cleanup", "-n", NS, "--all"], api=standin) == 0
    assert standin.labelled(kobjects.MANAGED_SELECTOR) == []
    assert _kube_cli.main(["cleanup", "-n", NS, "--all"], api=standin) == 0
    assert "no turbolift runs in namespace team-a" in capsys.readouterr().out
    assert wait_gone(standin.live_processes()) == []

    with pytest.raises(ClusterError, match="no turbolift run gone in namespace team-a to attach to"):
        Kubernetes(NS, attach=True, run_id="gone", api=standin).wait_ready(1)


def test_exit_reason_reports_how_a_pod_lost_its_worker(standin):
    cluster = Kubernetes(NS, image=IMAGE, replicas=1, api=standin)
    (address,) = cluster.wait_ready(60)
    (pod,) = standin.ready_pods(NS)
    assert cluster.exit_reason(address) is None
    standin.kill_container(NS, pod)
    assert cluster.exit_reason(address, timeout=30).startswith(f"pod {pod}: Error, exit code ")
    assert cluster.exit_reason("10.9.9.9:50051") is None   # not a pod of this run
    cluster.stop()


def test_scaling_down_lets_calls_in_flight_finish(tmp_path, distributed):
    standin = StandInKubernetes(tmp_path / "standin", images={IMAGE: turbolift_image}, termination_grace=10)
    cluster = Kubernetes(NS, image=IMAGE, replicas=2, api=standin)
    try:
        switch.enable(cluster)
        where = on(cluster)(kube_payload.where)
        assert len(spread(where, 2)) == 2                      # both pods hold the bundle now
        futures = [where.submit(2.0) for _ in range(4)]        # in flight on both pods
        standin.scale(NS, cluster.names.deployment, 1)         # one pod drains for 10 s: time enough
        assert all(future.result(timeout=60).startswith("turbolift-") for future in futures)
    finally:
        _runtime.disable()
        standin.close()


# -- the real adapter, and a real cluster when one is given -----------------------

def test_the_real_api_adapter_reports_an_unreachable_cluster(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],   # discard port
        "users": [{"name": "nobody", "user": {"token": "x"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}]}))
    api = KubeApi(str(kubeconfig))
    started = time.monotonic()
    with pytest.raises(KubeApiError) as info:
        api.list("Pod", NS)
    assert info.value.status == 0 and "127.0.0.1:9" in str(info.value)
    assert time.monotonic() - started < 30
    with pytest.raises(ConfigurationError, match="no usable Kubernetes configuration"):
        KubeApi(str(tmp_path / "missing-kubeconfig"))
    cluster = Kubernetes(NS, image=IMAGE, kubeconfig=str(kubeconfig))
    with pytest.raises(ClusterError, match="Is the cluster up and the kubeconfig context right"):
        cluster.start()


REAL_CLUSTER = os.environ.get("TURBOLIFT_TEST_KUBECONFIG")


@pytest.mark.skipif(not REAL_CLUSTER, reason="set TURBOLIFT_TEST_KUBECONFIG (and TURBOLIFT_TEST_IMAGE) "
                                             "to run against a real cluster")
def test_real_cluster(tmp_path):
    """From nothing to distributed calls on pods and back to nothing, on a real cluster.

    Needs ``TURBOLIFT_TEST_IMAGE``: the image built from this checkout's
    Dockerfile with the same Python minor version as this interpreter,
    pullable by the cluster; ``TURBOLIFT_TEST_NAMESPACE`` (default
    ``default``); and pod IPs reachable from this machine (see the README).
    """
    image = os.environ["TURBOLIFT_TEST_IMAGE"]
    namespace = os.environ.get("TURBOLIFT_TEST_NAMESPACE", "default")
    run_id = kobjects.new_run_id()
    api = KubeApi(REAL_CLUSTER)
    selector = kobjects.run_selector(run_id)
    kinds = ("Secret", "Service", "Deployment", "HorizontalPodAutoscaler", "Pod", "EndpointSlice")

    def leftovers() -> list[str]:
        return [f"{kind}/{o['metadata']['name']}" for kind in kinds
                for o in api.list(kind, namespace, label_selector=selector)[0]]

    assert leftovers() == []
    script = tmp_path / "app.py"
    script.write_text(
        "import json, os, socket, time\n"
        "from turbolift import on\n"
        "@on()\n"
        "def where(seconds):\n"
        "    time.sleep(seconds)\n"
        "    return os.environ.get('HOSTNAME') or socket.gethostname()\n"
        "@on()\n"
        "def square(x):\n"
        "    return x * x\n"
        "print(json.dumps({'squares': list(square.map(range(20))),\n"
        "                  'pods': sorted({f.result() for f in [where.submit(0.5) for _ in range(8)]})}))\n")
    url = (f"k8s://{namespace}?image={image}&replicas=2&run_id={run_id}&kubeconfig={REAL_CLUSTER}"
           "&pull_policy=IfNotPresent")
    result = subprocess.run([sys.executable, "-m", "turbolift", "--cluster", url, str(script)],
                            capture_output=True, text=True, timeout=600, env=child_env(tmp_path / "cache"),
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["squares"] == [i * i for i in range(20)]
    assert len(report["pods"]) == 2 and all(p.startswith(f"turbolift-{run_id}-") for p in report["pods"])
    deadline = time.monotonic() + 180   # pods terminate after the program has deleted their Deployment
    while leftovers() and time.monotonic() < deadline:
        time.sleep(2)
    assert leftovers() == []
