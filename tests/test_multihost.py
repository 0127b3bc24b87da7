"""Workers on other hosts: network namespaces made by this test, one cut off partway.

Two Linux network namespaces stand in for two hosts. Each is joined to the
root namespace by a veth pair with addresses in a private /24 chosen by the
test (one /30 per host), and runs a hand-started ``turbolift worker``
listening on its veth address -- not loopback, hence with a token. The
caller, in the root namespace, reaches both with ``Workers(a, b,
token_file=...)``. While calls run, the root side of one veth is set down:
calls move to the surviving host and all of them return correct results.

An ``unreachable`` route for the whole /24 keeps every packet the test sends
inside its namespaces: once a link is down, traffic for its host fails at
once instead of following the default route out of the machine.

Skipped, with the reason, where namespaces cannot be made (not Linux, not
root, no ``ip``, or ``ip netns add`` refused). Names include this process's
pid so that parallel runs do not collide; namespaces, links, routes and
processes are removed even when the test fails.
"""
from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pytest
from conftest import child_env, wait_gone

from turbolift import Workers, _runtime, on
from turbolift._enabling import switch

PORT = 50051
HOST_ENV = "TURBOLIFT_TEST_HOST"
CALLS = 400
IN_FLIGHT = 16
CALL_SECONDS = 0.1
CUT_AFTER = CALLS // 4
# The client notices a dead link by keepalive (5 s ping + 5 s timeout); allow that plus slack.
MOVE_BOUND = 40.0


def where(i: int, seconds: float, log_dir: str) -> tuple:
    """Run on a worker: note that call ``i`` started on this host, nap, name the host that answered."""
    host = os.environ.get(HOST_ENV, "?")
    with open(os.path.join(log_dir, f"{host}.started"), "a") as handle:
        handle.write(f"{i}\n")
    time.sleep(seconds)
    return i, i * i, host, os.getpid()


# -- the network ----------------------------------------------------------------------

def ip(*args: str, namespace: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    command = ["ip", *args] if namespace is None else ["ip", "netns", "exec", namespace, "ip", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")
    return done


def free_subnet() -> str:
    """The first three octets of a 10.231.N.0/24 that no address or route of this host uses."""
    used = ip("-4", "addr", "show").stdout + ip("-4", "route", "show", "table", "all").stdout
    for step in range(256):
        prefix = f"10.231.{(os.getpid() + step) % 256}"
        if f"{prefix}." not in used:
            return prefix
    pytest.skip("no free 10.231.N.0/24 subnet for the test's namespaces")


@dataclass
class Host:
    """One namespace: its veth pair, addresses, and the worker running in it."""

    name: str
    namespace: str
    outside: str          # the veth end in the root namespace
    inside: str           # the veth end in the host's namespace
    outside_address: str
    address: str          # the worker's address, inside the namespace
    process: Optional[subprocess.Popen] = None
    server_pids: list = field(default_factory=list)
    log: Optional[Path] = None

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{PORT}"

    def pids(self) -> list:
        """The supervisor and the server processes of this host's worker."""
        return ([self.process.pid] if self.process else []) + self.server_pids


class Network:
    """The namespaces, links and route the test creates, and removes."""

    def __init__(self) -> None:
        self.prefix = free_subnet()
        tag = str(os.getpid())
        self.hosts = [
            Host(name, f"tl{tag}{name}", f"tlr{tag}{name}", f"tln{tag}{name}",
                 f"{self.prefix}.{4 * index + 1}", f"{self.prefix}.{4 * index + 2}")
            for index, name in enumerate("ab")
        ]
        self.created: list = []   # (kind, name), undone in reverse order
        self.route = f"{self.prefix}.0/24"

    def build(self) -> None:
        ip("route", "add", "unreachable", self.route)
        self.created.append(("route", self.route))
        for host in self.hosts:
            ip("netns", "add", host.namespace)
            self.created.append(("netns", host.namespace))
            ip("link", "add", host.outside, "type", "veth", "peer", "name", host.inside)
            self.created.append(("link", host.outside))
            ip("link", "set", host.inside, "netns", host.namespace)
            ip("addr", "add", f"{host.outside_address}/30", "dev", host.outside)
            ip("link", "set", host.outside, "up")
            ip("addr", "add", f"{host.address}/30", "dev", host.inside, namespace=host.namespace)
            ip("link", "set", host.inside, "up", namespace=host.namespace)
            ip("link", "set", "lo", "up", namespace=host.namespace)

    def cut(self, host: Host) -> None:
        """Take the host's link down on our side, as a pulled cable or a dead switch port would."""
        ip("link", "set", host.outside, "down")

    def teardown(self) -> list:
        problems = []
        for kind, name in reversed(self.created):
            if kind == "netns":
                done = ip("netns", "del", name, check=False)
            elif kind == "link":  # usually gone with its namespace's end already
                if ip("link", "show", name, check=False).returncode != 0:
                    continue
                done = ip("link", "del", name, check=False)
            else:
                done = ip("route", "del", "unreachable", name, check=False)
            if done.returncode != 0:
                problems.append(f"{kind} {name}: {done.stderr.strip()}")
        return problems


def namespaces_unavailable() -> Optional[str]:
    """Why this machine cannot run the test, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are a Linux feature"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run as root or in a privileged container)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    return None


# -- the workers --------------------------------------------------------------------

def start_worker(host: Host, token_file: Path, cache_dir: Path, log_dir: Path) -> None:
    """Start ``turbolift worker`` inside the host's namespace, on its veth address, with the token."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    host.log = log_dir / f"worker-{host.name}.stderr"
    command = ["ip", "netns", "exec", host.namespace, sys.executable, "-m", "turbolift", "worker",
               "--listen", host.endpoint, "--token-file", str(token_file), "--cache-dir", str(cache_dir)]
    with open(host.log, "w") as stderr:
        # `ip netns exec` execs the command: this pid is the worker's supervisor.
        env = child_env(cache_dir, **{HOST_ENV: host.name})
        host.process = subprocess.Popen(command, cwd=cache_dir, env=env, stdout=subprocess.PIPE,
                                        stderr=stderr, text=True)


def wait_listening(host: Host, timeout: float = 60.0) -> None:
    assert host.process is not None and host.process.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while "listening on" not in line:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or host.process.poll() is not None:
            raise AssertionError(f"worker {host.name} did not start: {line!r} {host.log.read_text()[-2000:]}")
        readable, _, _ = select.select([host.process.stdout], [], [], remaining)
        if readable:
            line = host.process.stdout.readline()
    with open(f"/proc/{host.process.pid}/task/{host.process.pid}/children") as handle:
        host.server_pids = [int(pid) for pid in handle.read().split()]


def stop_worker(host: Host) -> None:
    process = host.process
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stdout:
        process.stdout.close()


@pytest.fixture
def two_hosts(tmp_path) -> Iterator[tuple]:
    """Two namespaced hosts, each with a token-protected worker on its veth address."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    network = Network()
    try:
        network.build()
    except RuntimeError as exc:
        problems = network.teardown()
        pytest.skip(f"cannot create the test network (namespaces, veth links, a route) here: {exc}"
                    + (f" (cleanup: {problems})" if problems else ""))
    token_file = tmp_path / "token"
    token_file.write_text("multihost-token-" + os.urandom(12).hex() + "\n")
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    try:
        for host in network.hosts:
            start_worker(host, token_file, tmp_path / f"cache-{host.name}", tmp_path)
        for host in network.hosts:
            wait_listening(host)
        yield network, token_file, log_dir
    finally:
        _runtime.disable()
        for host in network.hosts:
            stop_worker(host)
        left = wait_gone([pid for host in network.hosts for pid in host.pids()], timeout=15)
        problems = network.teardown()
        assert not left, f"worker processes outlived the test: {left}"
        assert not problems, f"could not remove what the test created: {problems}"


def started_on(log_dir: Path, host: Host) -> set:
    path = log_dir / f"{host.name}.started"
    return {int(line) for line in path.read_text().split()} if path.exists() else set()


def test_calls_spread_over_two_hosts_and_move_to_the_survivor_when_one_is_cut_off(two_hosts):
    """Both namespaced hosts serve calls; after one's link goes down, every call is answered by the other.

    Proves, with a token over non-loopback addresses: calls spread over
    both hosts; cutting one off mid-run loses no call and corrupts none;
    calls sent after the cut, and calls that were running on the cut host
    (it logged their start), are answered by the survivor within the
    keepalive bound; the cut host is really unreachable.
    """
    network, token_file, log_dir = two_hosts
    host_a, host_b = network.hosts
    cluster = Workers(host_a.endpoint, host_b.endpoint, token_file=str(token_file))
    switch.enable(cluster)
    remote = on(cluster)(where)

    # Phase 1: a cold, concurrent start (each host's cache is empty, so each receives the bundle),
    # and both hosts answer.
    warm = [remote.submit(-1 - n, 0.02, str(log_dir)) for n in range(40)]
    answered = [future.result(timeout=60) for future in warm]
    assert {host for _, _, host, _ in answered} == {"a", "b"}, f"calls did not spread: {answered}"

    # Phase 2: a window of calls; cut host a off once a quarter have completed.
    slots = threading.Semaphore(IN_FLIGHT)
    lock = threading.Lock()
    results: dict = {}
    errors: dict = {}
    after_cut: set = set()
    cut_at: Optional[float] = None

    def record(i: int, future) -> None:
        with lock:
            try:
                results[i] = future.result()
            except BaseException as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
        slots.release()

    started = time.monotonic()
    for i in range(CALLS):
        with lock:
            done = len(results) + len(errors)
            answered_now = set(results) | set(errors)
        # Cut once a quarter is done and a call is running on host a (on a busy machine the calls in
        # flight may all be on b for a moment: a cut then would prove nothing, CI's one failure).
        running_on_a = {n for n in started_on(log_dir, host_a) if n >= 0} - answered_now   # (not phase 1's)
        if cut_at is None and done >= CUT_AFTER and running_on_a:
            network.cut(host_a)
            cut_at = time.monotonic()
        assert slots.acquire(timeout=MOVE_BOUND + 30), "no call finished for too long"
        if cut_at is not None:
            after_cut.add(i)
        remote.submit(i, CALL_SECONDS, str(log_dir)).add_done_callback(lambda f, i=i: record(i, f))
    deadline = (cut_at or started) + MOVE_BOUND
    while time.monotonic() < deadline:
        with lock:
            if len(results) + len(errors) == CALLS:
                break
        time.sleep(0.05)
    finished = time.monotonic()

    assert cut_at is not None
    with lock:
        assert not errors, f"{len(errors)} calls failed, e.g. {sorted(errors.items())[:3]}"
        missing = sorted(set(range(CALLS)) - set(results))
        assert not missing, f"{len(missing)} calls unanswered {MOVE_BOUND:.0f} s after the cut: {missing[:9]}"
        wrong = [(i, r) for i, r in results.items() if r[:2] != (i, i * i)]
        assert not wrong, f"wrong results: {wrong[:5]}"
        by_host = {i: r[2] for i, r in results.items()}
    assert {by_host[i] for i in after_cut} == {"b"}, "a call sent after the cut was answered by the cut host"
    assert len(after_cut) >= CALLS // 2
    moved = started_on(log_dir, host_a) & {i for i, host in by_host.items() if host == "b"}
    assert moved, "no call was running on the cut host: the cut proved nothing"
    assert finished - cut_at < MOVE_BOUND

    # The cut host is really unreachable from here (and nothing leaves through the default route).
    with pytest.raises(OSError):
        socket.create_connection((host_a.address, PORT), timeout=3).close()
    # The survivor still serves.
    assert remote(10**6, 0.0, str(log_dir))[2] == "b"
    print(f"\nmultihost: {CALLS} calls, host a cut after {CUT_AFTER}; {len(moved)} calls that had started "
          f"on a were answered by b; all answered {finished - cut_at:.1f} s after the cut")


def test_the_first_submitted_call_to_workers_with_separate_caches_succeeds(start_worker, tmp_path):
    """Two loopback workers, each with its own bundle cache as on two hosts: submit() on a cold cluster.

    Regression: the call that uploaded the bundle after BUNDLE_MISSING was re-sent to a worker picked
    afresh -- on an idle cluster the other one, which lacked the bundle too -- and failed with "lost
    bundle ... right after it was uploaded" (workers sharing one cache, as LocalQueue's do, never saw it).
    """
    first, second = start_worker(), start_worker()  # each gets a cache directory of its own
    cluster = Workers(first.address, second.address)
    switch.enable(cluster)
    try:
        i, square, _, _ = on(cluster)(where).submit(7, 0.0, str(tmp_path)).result(timeout=60)
        assert (i, square) == (7, 49)
    finally:
        _runtime.disable()
