"""The worker image, for real: built from the project's Dockerfile, run in a container, called.

What the Kubernetes platform deploys is this image, so it is built here with
podman, from the very working tree under test, and a caller on this machine
calls the worker in it through ``python -m turbolift --cluster grpc://...``:

* the base is Debian bookworm with ``python3``, ``python3-venv`` and
  ``python3-pip``, made by ``mmdebstrap`` and imported with ``podman import``
  (no image registry is reachable here), passed to the Dockerfile as
  ``PYTHON_IMAGE``. bookworm's python3 is 3.11, and a worker takes bundles
  only from a caller with the same major.minor, so the test needs a 3.11
  caller;
* the build reaches the package index as this machine's pip does: the CA
  bundle pip trusts here (an intercepting proxy's CA may be in it) is mounted
  into the build and named by ``PIP_CERT``, and an http(s) index or mirror
  configured for pip here is passed on; ``PIP_BREAK_SYSTEM_PACKAGES=1``
  because Debian's pip otherwise refuses to install into Debian's Python;
* the container runs as the image's uid 10001 with every capability dropped,
  the token file mounted read-only where the manifests mount it, and its
  port published on 127.0.0.1 only: the caller reaches it over loopback.

Cached, because building the base takes a while: the mmdebstrap tarball (in
``$TURBOLIFT_TEST_CACHE``, default ``~/.cache/turbolift-tests``) and the
imported base image, both keyed by a hash of what went into them, so a later
run reuses them; delete the tarball and ``podman rmi`` the base to start
cold. The worker image is built once per session (podman's layer cache
makes an unchanged tree cheap to rebuild) and removed at its end; the
container is removed after the test, also when it fails.

Needs root with podman and mmdebstrap (``.ci/run`` installs them where it
can); skipped elsewhere, with the reason. The podman configuration this
sandbox needs (runc, cgroupfs, ulimits) is written by ``.ci/run`` into
``/etc/containers/containers.conf``.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pytest
from conftest import REPO, child_env, write_files

from turbolift.platforms.kubernetes.objects import HEALTH_SERVICE, RUN_AS, TOKEN_PATH, WORKER_PORT

SUITE = "bookworm"
BASE_PYTHON = (3, 11)      # bookworm's python3
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "passwd")
# The same mirrors a bookworm system uses by default; TURBOLIFT_TEST_DEBIAN_MIRRORS (sources.list
# lines separated by ';') replaces them where another mirror must be used.
DEFAULT_MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
                   "deb http://deb.debian.org/debian bookworm-updates main",
                   "deb http://security.debian.org/debian-security bookworm-security main")
BUILD_CA_PATH = "/run/build-ca.pem"
CONTAINER_LABEL = "turbolift-test=1"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Bounds on every step, generous for a busy shared machine; each is also a cap on how long CI can hang.
MMDEBSTRAP_SECONDS = 600
IMPORT_SECONDS = 180
BUILD_SECONDS = 600
PODMAN_SECONDS = 120          # podman info, run, inspect, port, rm
HEALTH_SECONDS = 120
CALL_SECONDS = 180


def report(capsys: pytest.CaptureFixture, lines: list[str]) -> None:
    """Print ``lines`` to the terminal whether or not pytest captures output (with -s or without)."""
    with capsys.disabled():
        for line in lines:
            print(f"\n[test_container] {line}", end="", flush=True)
        print()


def podman(*args: str, timeout: float = PODMAN_SECONDS, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``podman ARGS``; with ``check``, fail the test with podman's own output when it fails."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({result.returncode}):\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def why_no_podman() -> Optional[str]:
    """Why the test cannot run on this machine, or None when it can."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs root on Linux: the test runs rootful podman and mmdebstrap"
    missing = [tool for tool in ("podman", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed (Debian: apt-get install podman mmdebstrap runc "
                "uidmap slirp4netns; .ci/run does it when it runs as root)")
    if sys.version_info[:2] != BASE_PYTHON:
        return (f"the worker image's Python is Debian {SUITE}'s {BASE_PYTHON[0]}.{BASE_PYTHON[1]}, and a "
                f"worker takes bundles only from a caller with the same major.minor; this is "
                f"{sys.version_info[0]}.{sys.version_info[1]}")
    try:
        info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=PODMAN_SECONDS,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"podman info did not answer within {PODMAN_SECONDS} s"
    if info.returncode != 0:
        return f"podman does not work here: {info.stderr.strip()[-500:]}"
    return None


# -- the base image -------------------------------------------------------------------

def mirrors() -> list[str]:
    configured = os.environ.get("TURBOLIFT_TEST_DEBIAN_MIRRORS", "")
    return [line.strip() for line in configured.split(";") if line.strip()] or list(DEFAULT_MIRRORS)


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "turbolift-tests"
    path = Path(os.environ.get("TURBOLIFT_TEST_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_key() -> str:
    """A hash of everything that goes into the base: a change of any makes a new one."""
    recipe = {"suite": SUITE, "variant": "apt", "packages": BASE_PACKAGES, "mirrors": mirrors(), "format": 1}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def make_base_tarball(tarball: Path) -> None:
    """A minimal bookworm root file system with Python, as a tarball (mmdebstrap, as root)."""
    partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.partial")
    command = ["mmdebstrap", "--variant=apt", f"--include={','.join(BASE_PACKAGES)}",
               # Mirrors here may serve a frozen snapshot whose Release files have expired.
               "--aptopt=Acquire::Check-Valid-Until \"false\"", "--aptopt=Acquire::Retries \"3\"",
               "--format=tar", SUITE, str(partial), *mirrors()]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=MMDEBSTRAP_SECONDS,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            pytest.fail(f"mmdebstrap failed ({result.returncode}):\n{result.stderr[-4000:]}")
        os.replace(partial, tarball)   # atomic: a concurrent or interrupted run never sees half a tarball
    finally:
        partial.unlink(missing_ok=True)


def ensure_base_image(timings: dict[str, str]) -> str:
    """The imported base image's tag, made (tarball, import) only when not there already."""
    key = base_key()
    tag = f"localhost/turbolift-test-base:{SUITE}-{key}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        timings["base image"] = f"{tag} cached"
        return tag
    tarball = cache_dir() / f"{SUITE}-python3-{key}.tar"
    if tarball.exists():
        timings["mmdebstrap"] = f"{tarball} cached"
    else:
        started = time.monotonic()
        make_base_tarball(tarball)
        timings["mmdebstrap"] = f"{time.monotonic() - started:.0f} s"
    started = time.monotonic()
    podman("import", "--change", 'CMD ["/bin/bash"]', str(tarball), tag, timeout=IMPORT_SECONDS)
    timings["podman import"] = f"{time.monotonic() - started:.0f} s"
    return tag


# -- the worker image -----------------------------------------------------------------

def host_pip_settings() -> dict[str, str]:
    """pip's index settings on this machine that also make sense inside a build.

    From ``pip config list``, where the environment (``:env:``) is listed
    after the files and so wins, as it does for pip. Only http(s) indexes
    are passed on: a ``file://`` index or a find-links folder of this
    machine is not inside the build.
    """
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if section in ("global", "install", ":env:") and value:
            settings[key] = value.strip("'\"")
    web = " ".join(url for url in settings.get("extra-index-url", "").split()
                   if url.startswith(("http://", "https://")))
    chosen = {"PIP_EXTRA_INDEX_URL": web, "PIP_TRUSTED_HOST": settings.get("trusted-host", "")}
    if settings.get("index-url", "").startswith(("http://", "https://")):
        chosen["PIP_INDEX_URL"] = settings["index-url"]
    cert = settings.get("cert")
    chosen["ca"] = cert if cert and Path(cert).is_file() else (str(HOST_CA_BUNDLE) if HOST_CA_BUNDLE.is_file()
                                                                else "")
    return {name: value for name, value in chosen.items() if value}


@dataclass
class WorkerImage:
    tag: str
    image_id: str
    timings: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def worker_image() -> Iterator[WorkerImage]:
    """The worker image built from the Dockerfile at the root of this tree, once per session."""
    reason = why_no_podman()
    if reason:
        pytest.skip(reason)
    timings: dict[str, str] = {}
    base = ensure_base_image(timings)
    pip = host_pip_settings()
    tag = f"localhost/turbolift-test-worker:{os.getpid()}-{secrets.token_hex(3)}"
    args = ["build", "--pull=never", "--layers", "-f", str(REPO / "Dockerfile"), "-t", tag,
            "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", "PIP_BREAK_SYSTEM_PACKAGES=1"]
    ca = pip.pop("ca", None)
    if ca:
        args += ["-v", f"{ca}:{BUILD_CA_PATH}:ro", "--build-arg", f"PIP_CERT={BUILD_CA_PATH}"]
    for name, value in pip.items():
        args += ["--build-arg", f"{name}={value}"]
    started = time.monotonic()
    podman(*args, str(REPO), timeout=BUILD_SECONDS)
    timings["podman build"] = f"{time.monotonic() - started:.0f} s"
    image_id = podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    try:
        yield WorkerImage(tag, image_id, timings)
    finally:
        podman("rmi", tag, check=False)


# -- the container --------------------------------------------------------------------

@dataclass
class RunningWorker:
    name: str
    port: int
    token_file: Path
    hostname: str


def health_serving(port: int) -> bool:
    """One gRPC health check of the worker's service over loopback, as a Kubernetes probe makes it."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=3)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_healthy(name: str, port: int) -> float:
    """Wait (bounded in time and in tries) until the worker answers its health check; the seconds taken."""
    started = time.monotonic()
    deadline = started + HEALTH_SECONDS
    for _ in range(HEALTH_SECONDS * 4):
        if health_serving(port):
            return time.monotonic() - started
        running = podman("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
        if running != "true":
            logs = podman("logs", name, check=False)
            pytest.fail(f"the worker container stopped before it was healthy:\n{logs.stdout}{logs.stderr}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    logs = podman("logs", name, check=False)
    pytest.fail(f"no healthy worker on 127.0.0.1:{port} after {HEALTH_SECONDS} s:\n"
                f"{logs.stdout}{logs.stderr}")


def remove_leftovers() -> None:
    """Remove containers of this test whose session is gone (killed before its clean-up ran).

    Names carry the pid of the session that started them, so a running
    session's container is never touched.
    """
    listed = podman("ps", "--all", "--filter", f"label={CONTAINER_LABEL}", "--format", "{{.Names}}",
                    check=False).stdout.split()
    for name in listed:
        pid = name.split("-")[2] if name.count("-") >= 3 else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            podman("rm", "--force", "--time", "5", name, check=False)


@pytest.fixture
def running_worker(worker_image: WorkerImage, tmp_path: Path) -> Iterator[RunningWorker]:
    """A worker container with a fresh token, its port on 127.0.0.1 only; removed afterwards, always."""
    token_file = tmp_path / "token"
    token_file.write_text(secrets.token_hex(32) + "\n")
    os.chown(token_file, RUN_AS, RUN_AS)      # the worker's user reads it, nobody else
    token_file.chmod(0o600)
    remove_leftovers()
    name = f"turbolift-test-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        podman("run", "--detach", "--name", name, "--label", CONTAINER_LABEL,
               "--publish", f"127.0.0.1::{WORKER_PORT}",       # a free host port, on loopback only
               "--volume", f"{token_file}:{TOKEN_PATH}:ro",
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges", worker_image.tag)
        published = podman("port", name, f"{WORKER_PORT}/tcp").stdout.split()[0]   # 127.0.0.1:PORT
        host, _, port = published.rpartition(":")
        assert host == "127.0.0.1", published
        hostname = podman("inspect", "--format", "{{.Config.Hostname}}", name).stdout.strip()
        seconds = wait_healthy(name, int(port))
        worker_image.timings["healthy after"] = f"{seconds:.1f} s"
        yield RunningWorker(name, int(port), token_file, hostname)
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


# -- the calls ------------------------------------------------------------------------

APP = """
    import json
    import os
    import socket
    import sys

    import turbolift


    @turbolift.on()
    def where(n):
        return {"hostname": socket.gethostname(), "uid": os.getuid(), "python": list(sys.version_info[:2]),
                "squares": sum(i * i for i in range(n))}


    results = [where(10), where(100_000)]
    results += list(where.map(range(6)))
    print(json.dumps(results))
"""


def run_caller(app_dir: Path, port: int, token_file: Path) -> subprocess.CompletedProcess:
    """``python -m turbolift --cluster grpc://127.0.0.1:PORT`` on the script, with this tree's turbolift."""
    env = child_env(app_dir / "cache", PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-m", "turbolift", "--cluster", f"grpc://127.0.0.1:{port}",
                           "--token-file", str(token_file), "app.py"], cwd=app_dir, env=env,
                          capture_output=True, text=True, timeout=CALL_SECONDS, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(MMDEBSTRAP_SECONDS + IMPORT_SECONDS + BUILD_SECONDS + 300)
def test_the_dockerfile_image_serves_calls_from_this_machine(running_worker, worker_image, tmp_path,
                                                             capsys):
    report(capsys, [f"image {worker_image.tag}, id {worker_image.image_id}",
                    "steps: " + ", ".join(f"{step} {value}" for step, value in worker_image.timings.items())])
    app_dir = write_files(tmp_path / "app", {"app.py": APP})
    result = run_caller(app_dir, running_worker.port, running_worker.token_file)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    hostnames = {item["hostname"] for item in results}
    report(capsys, [f"worker hostname seen from the calls: {', '.join(sorted(hostnames))} "
                    f"(container {running_worker.name}, whose hostname is {running_worker.hostname}; "
                    f"this machine's: {socket.gethostname()})"])

    # Every call ran in the container, as its non-root user, on the base's Python.
    assert hostnames == {running_worker.hostname} and running_worker.hostname != socket.gethostname()
    assert {item["uid"] for item in results} == {RUN_AS}
    assert {tuple(item["python"]) for item in results} == {BASE_PYTHON}
    assert [item["squares"] for item in results] == [sum(i * i for i in range(n))
                                                     for n in (10, 100_000, *range(6))]

    # The mounted token is the one in force: a caller with another one gets an error naming the
    # token, and no call runs (the exact wording is the transport's).
    wrong = tmp_path / "wrong-token"
    wrong.write_text(secrets.token_hex(32) + "\n")
    refused = run_caller(app_dir, running_worker.port, wrong)
    assert refused.returncode != 0 and not refused.stdout, refused.stdout
    assert "token" in refused.stderr.splitlines()[-1], refused.stderr[-2000:]
