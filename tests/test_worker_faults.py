"""A bad day for a worker: deadlines that land anywhere, exceptions that will not pickle, a
stopped process, a flood of queued calls, hostile arguments and archives, leaks, unclear errors.

Every test starts real worker processes and talks to them over real sockets. Time limits are
wide: they separate "answered" from "hung", never fast from slow.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import grpc
import pytest
from conftest import child_env, distributed_on, wait_gone, write_files

from turbolift import LocalQueue, Workers, _runtime, on
from turbolift._enabling import switch
from turbolift._wire.bundle_format import MANIFEST, python_tag
from turbolift.errors import ClusterError
from turbolift.v1 import worker_pb2 as pb
from turbolift.v1 import worker_pb2_grpc as pb_grpc

# -- functions the workers run -------------------------------------------------------


def spin(seconds):
    """Busy CPU for ``seconds`` (never sleeps: cancellation must land in running bytecode)."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return n


def pid():
    return os.getpid()


def nap(seconds, marker=None):
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


class ReduceRaises(Exception):
    """An exception whose pickling raises a BaseException that is not an Exception."""

    def __reduce__(self):
        raise KeyboardInterrupt("no pickling for you")


class StrRaises(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class UnpicklableValue:
    def __reduce__(self):
        raise SystemExit("no pickling for you")


def raise_reduce_raises():
    raise ReduceRaises("boom")


def raise_str_raises():
    raise StrRaises("boom")


def return_unpicklable():
    return UnpicklableValue()


class SlowToUnpickle:
    """Unpickling this spins the CPU for ``seconds`` in ``__setstate__`` (in the worker)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __getstate__(self):
        return {"seconds": self.seconds}

    def __setstate__(self, state):
        self.seconds = state["seconds"]
        if os.environ.get("TURBOLIFT_TEST_WORKER"):
            spin(self.seconds)


def identity(value):
    return "ran"


def big_then_late(seconds, size):
    time.sleep(seconds)
    return b"\x01" * size   # finished near the deadline: it may be pickled, or sent, when the caller leaves


def sized(index, size):
    return bytes([index % 256]) * size


# -- helpers ------------------------------------------------------------------------

def describe(worker) -> pb.DescribeReply:
    with grpc.insecure_channel(worker.address) as channel:
        stub = pb_grpc.WorkerStub(channel)
        return stub.Describe(pb.DescribeRequest(), metadata=worker.metadata, timeout=10)


def health(address: str, timeout: float) -> float:
    """Seconds a health check took (raises grpc.RpcError past ``timeout``)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        started = time.monotonic()
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        return time.monotonic() - started


def rss(pid_: int) -> int:
    with open(f"/proc/{pid_}/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS"))


def server_pid(worker) -> int:
    """The gRPC server process of a hand-started worker (a child of its supervisor)."""
    return describe(worker).pid


@pytest.fixture
def hand_started(start_worker):
    """A hand-started worker with 2 slots, distribution on to it; off afterwards."""
    worker = start_worker(extra_args=("--threads", "2"), env={"TURBOLIFT_TEST_WORKER": "1"})
    switch.enable(Workers(worker.address))
    yield worker
    _runtime.disable()


def answered_or_timed_out(futures, timeout):
    """Wait for every future; return (results, timeouts). Anything else is raised."""
    results, timeouts = [], 0
    for future in futures:
        try:
            results.append(future.result(timeout=timeout))
        except TimeoutError:
            timeouts += 1
    return results, timeouts


# -- 8. deadlines that expire as calls finish never wedge the worker ---------------------------

@pytest.mark.parametrize("where", ["hand-started", "local"])
def test_deadlines_expiring_as_cpu_bound_calls_finish_never_wedge_the_worker(where, start_worker, tmp_path):
    if where == "hand-started":
        worker = start_worker(extra_args=("--threads", "2"))
        switch.enable(Workers(worker.address))
    else:
        switch.enable(LocalQueue(workers=1, cache_dir=str(tmp_path / "cache")))
    try:
        f = on()(spin)
        assert f(0.01) > 0
        # Deadlines spread around the calls' own length: cancellations land before, inside and
        # after the user code, in the slot's release and in the reply's pickling.
        futures = [f.options(timeout=0.05 + 0.01 * (i % 10)).submit(0.1) for i in range(60)]
        results, timeouts = answered_or_timed_out(futures, timeout=120)
        assert len(results) + timeouts == 60
        # Afterwards the worker still serves: a call, a health check, a Describe, all prompt.
        assert f(0.01) > 0
        if where == "hand-started":
            assert health(worker.address, timeout=5) < 5
            deadline = time.monotonic() + 30
            while describe(worker).calls_running and time.monotonic() < deadline:
                time.sleep(0.1)
            assert describe(worker).calls_running == 0
    finally:
        _runtime.disable()


def test_a_call_after_the_worker_idled_is_still_interrupted_at_its_deadline(start_worker):
    """The watchdog sleeps once a worker has been idle for a while (cancel.IDLE_SECONDS): the first
    call after that must wake it, or a CPU-bound call past its deadline would hold the only slot."""
    from turbolift._worker.cancel import IDLE_SECONDS

    worker = start_worker(extra_args=("--threads", "1"))
    switch.enable(Workers(worker.address))
    try:
        f = on()(spin)
        assert f(0.01) > 0
        time.sleep(IDLE_SECONDS + 1.5)   # the watchdog falls asleep
        with pytest.raises(TimeoutError):
            f.options(timeout=0.5).submit(60).result(timeout=60)
        began = time.monotonic()
        assert f(0.01) > 0   # the one slot is free again: the 60 s spin was interrupted
        assert time.monotonic() - began < 30
    finally:
        _runtime.disable()


# -- 9. exceptions whose pickling or str raises still get an answer ---------------------------

def test_an_exception_whose_pickling_raises_a_base_exception_is_still_answered(hand_started):
    with pytest.raises(Exception) as info:
        on(timeout=60)(raise_reduce_raises)()
    assert not isinstance(info.value, TimeoutError)
    assert "ReduceRaises" in str(info.value) and "boom" in str(info.value)
    # A result whose pickling raises SystemExit: a TypeError naming the result, never the SystemExit
    # itself (which would end the caller's program).
    with pytest.raises(TypeError, match="cannot serialise the result: pickling it raised SystemExit"):
        on(timeout=60)(return_unpicklable)()
    assert on()(pid)() == server_pid(hand_started)   # the worker goes on serving


def test_an_exception_whose_str_raises_arrives_as_itself(hand_started):
    with pytest.raises(StrRaises) as info:
        on(timeout=60)(raise_str_raises)()
    assert info.value.args == ("boom",)


# -- 10. a stopped worker is noticed within seconds, and the call gives exactly one result ------

def test_a_stopped_worker_is_noticed_promptly_and_the_call_gives_one_result(tmp_path):
    marker = tmp_path / "running"
    with distributed_on(2, tmp_path / "cache") as queue:
        f = on(retries=2)(nap)
        assert len({f(0) for _ in range(4)}) == 2   # both workers are up and used
        future = f.submit(1.0, str(marker))
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = int(marker.read_text())
        started = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        try:
            result = future.result(timeout=120)
            noticed = time.monotonic() - started
        finally:
            os.kill(victim, signal.SIGCONT)
        assert result != victim and result in queue.pids()   # retried on the other worker
        # The promise is ~10 s of silence; a busy machine gets a wide margin, never 60-88 s.
        assert noticed < 40, f"a stopped worker took {noticed:.1f} s to notice"
        print(f"stopped worker noticed after {noticed:.1f} s")
        time.sleep(1.5)   # the resumed worker finishes its copy of the call: nobody hears of it
        assert future.result() == result
        assert {f(0) for _ in range(6)} <= set(queue.pids())


def backtrack(n):
    """Holds the GIL in one C call (the regex engine) for seconds: no heartbeat can leave meanwhile."""
    import re

    started = time.monotonic()
    re.match(r"(a+)+$", "a" * n + "b")
    return time.monotonic() - started


def test_a_call_holding_the_gil_longer_than_the_silence_allowance_is_not_lost(tmp_path, monkeypatch):
    """A running local worker that sends nothing because one C call holds its GIL is left to finish;
    only a stopped one is lost (the test above). The allowance is cut to 1 s to keep this short."""
    from turbolift._caller import monitor

    monkeypatch.setattr(monitor, "SILENT_SECONDS", 1.0)
    with distributed_on(1, tmp_path / "cache") as queue:
        f = on(timeout=300, retries=0)(backtrack)
        assert f(5) < 1
        before = queue.pids()
        held = f(27)          # exponential: several seconds on any machine, in one C call
        assert held > 2.0, f"the call held the GIL only {held:.1f} s: make the input longer"
        assert queue.pids() == before   # the worker was neither lost nor replaced


# -- 11. health answers at once however many calls wait ------------------------------------

def test_health_answers_within_a_second_with_thousands_of_calls_queued(start_worker):
    worker = start_worker(extra_args=("--threads", "16"))
    switch.enable(Workers(worker.address))
    try:
        f = on(timeout=600)(nap)
        futures = [f.submit(0.05) for _ in range(2000)]
        time.sleep(1.0)
        slow = []
        for _ in range(24):
            try:
                took = health(worker.address, timeout=2.0)
            except grpc.RpcError as exc:
                slow.append(exc.code().name)
                continue
            if took >= 1.0:
                slow.append(f"{took:.2f} s")
            time.sleep(0.05)
        assert slow == [], f"{len(slow)} of 24 health checks were not answered within 1 s: {slow}"
        assert describe(worker).calls_running <= 16
        results, timeouts = answered_or_timed_out(futures, timeout=600)
        assert timeouts == 0 and len(results) == 2000
    finally:
        _runtime.disable()


# -- 12. unpickling arguments runs inside the slots and under the deadline --------------------

def test_slow_unpickling_is_bounded_by_slots_and_stopped_by_the_deadline(hand_started):
    f = on(timeout=1.0, retries=0)(identity)
    assert f("warm") == "ran"
    futures = [f.submit(SlowToUnpickle(30)) for _ in range(8)]
    time.sleep(0.5)
    running = describe(hand_started).calls_running
    assert 1 <= running <= 2, f"{running} calls running on a worker with 2 slots"
    results, timeouts = answered_or_timed_out(futures, timeout=120)
    assert (results, timeouts) == ([], 8)
    # The deadlines stopped the unpickling: the worker is free again long before 8 x 30 s / 2 slots.
    started = time.monotonic()
    assert on(timeout=60)(identity)("after") == "ran"
    assert time.monotonic() - started < 30
    # Every slot comes free well before one unpickling could finish (30 s): the last interrupted
    # one may release its slot a moment after the caller's deadline (a busy machine's moment).
    while describe(hand_started).calls_running and time.monotonic() - started < 20:
        time.sleep(0.1)
    assert describe(hand_started).calls_running == 0


# -- 13. nothing is left behind ------------------------------------------------------------

def test_results_abandoned_by_their_deadline_are_not_kept(start_worker):
    worker = start_worker()
    switch.enable(Workers(worker.address))
    try:
        f = on(retries=0)(big_then_late)
        assert len(f(0, 10)) == 10
        server = server_pid(worker)
        before = rss(server)
        for timeout in (0.3, 0.45, 0.5, 0.55, 0.7):   # around the 0.5 s the call takes
            try:
                f.options(timeout=timeout)(0.5, 200 * 1024 * 1024)
            except TimeoutError:
                pass
        deadline = time.monotonic() + 30   # the abandoned results are dropped as they finish
        while rss(server) > before + 150 * 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rss(server) < before + 150 * 1024 * 1024, "abandoned 200 MB results are still held"
    finally:
        _runtime.disable()


def test_partial_uploads_of_a_dead_worker_are_removed(start_worker, tmp_path):
    cache = tmp_path / "cache-leftovers"
    cache.mkdir(mode=0o700)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (cache / "bundles").mkdir(mode=0o700)
    leftovers = [cache / "bundles" / f".incoming-{dead.pid}-x", cache / "bundles" / f".unpack-{dead.pid}-y"]
    leftovers[0].write_bytes(b"half an upload")
    leftovers[1].mkdir()
    worker = start_worker(cache_dir=cache)
    switch.enable(Workers(worker.address))
    try:
        assert on()(pid)() == server_pid(worker)   # an upload happened
    finally:
        _runtime.disable()
    assert [path for path in leftovers if path.exists()] == []


def test_a_killed_caller_leaves_no_run_directory(tmp_path, cache_dir):
    write_files(tmp_path, {"waits.py": """
        import os, time
        from turbolift import on, _runtime

        @on()
        def where():
            return os.getpid()

        where()
        print(os.environ["TMPDIR"], " ".join(map(str, _runtime.worker_pids())), flush=True)
        time.sleep(60)
    """})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    command = [sys.executable, "-m", "turbolift", "--workers", "2", "waits.py"]
    process = subprocess.Popen(command, cwd=tmp_path, env=child_env(cache_dir, TMPDIR=str(tmp)),
                               stdout=subprocess.PIPE, text=True)
    with process:
        line = process.stdout.readline().split()
        assert len(line) == 3, line
        workers = [int(p) for p in line[1:]]
        assert [p.name for p in tmp.iterdir() if p.name.startswith("turbolift-run-")]
        process.kill()
        process.wait(30)
    assert wait_gone(workers) == []
    deadline = time.monotonic() + 15
    while any(p.name.startswith("turbolift-run-") for p in tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p.name for p in tmp.iterdir() if p.name.startswith("turbolift-run-")] == []


# -- 14. map batches larger than a message ---------------------------------------------------

def test_map_batches_whose_results_exceed_a_message_arrive_whole(tmp_path):
    from turbolift._wire.protocol import CALLER_RECEIVE_LIMIT

    size = 12 * 1024 * 1024
    with distributed_on(1, tmp_path / "cache"):
        results = list(on()(sized).map(range(8), [size] * 8, chunksize=8))
    # One batch of 8 results is 96 MiB, more than a caller accepts in one message: it came in chunks.
    assert 8 * size > CALLER_RECEIVE_LIMIT
    assert [(len(r), r[0]) for r in results] == [(size, i) for i in range(8)]


# -- 15. clear errors ------------------------------------------------------------------------

def test_a_worker_started_under_umask_002_uses_the_cache_it_made(tmp_path):
    write_files(tmp_path, {"app.py": """
        import os
        from turbolift import on

        @on()
        def double(x):
            return 2 * x

        print(double(21))
    """})
    cache = tmp_path / "fresh-cache"
    shell = 'umask 002 && exec "$0" -m turbolift --workers 1 app.py'
    out = subprocess.run(["sh", "-c", shell, sys.executable], cwd=tmp_path, env=child_env(cache),
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout.strip()) == (0, "42"), out.stderr
    assert cache.stat().st_mode & 0o022 == 0


def test_a_worker_that_fails_at_start_up_is_reported_with_its_exit_status(tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    queue = LocalQueue(workers=1, cache_dir=str(not_a_directory / "cache"))
    try:
        with pytest.raises(ClusterError) as info:
            queue.wait_ready(60)
    finally:
        queue.stop()
    assert "exit code 2" in str(info.value) and "None" not in str(info.value)


def test_a_port_in_use_is_could_not_listen_not_a_traceback(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "turbolift", "worker", "--no-restart",
                   "--listen", f"127.0.0.1:{port}", "--cache-dir", str(tmp_path / "c")]
        out = subprocess.run(command, env=child_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"could not listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def _zip(entries: dict, **options) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", **options) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _manifest() -> bytes:
    return json.dumps({"format": 1, **python_tag()}).encode()


def _with_flag(data: bytes, name: str, flag: int) -> bytes:
    """Set general-purpose ``flag`` bits on entry ``name``, in its local and its central header."""
    raw = bytearray(data)
    # (signature, offset of the flags, offset of the name's length, offset of the name)
    for signature, flags_at, length_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = raw.find(signature)
        while at != -1:
            length = int.from_bytes(raw[at + length_at:at + length_at + 2], "little")
            if raw[at + name_at:at + name_at + length] == name.encode():
                bits = int.from_bytes(raw[at + flags_at:at + flags_at + 2], "little") | flag
                raw[at + flags_at:at + flags_at + 2] = bits.to_bytes(2, "little")
            at = raw.find(signature, at + 4)
    return bytes(raw)


def _declaring(data: bytes, name: str, size: int) -> bytes:
    """Patch the uncompressed size that entry ``name`` declares in the central directory."""
    raw = bytearray(data)
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        length = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + length] == name.encode():
            raw[at + 24:at + 28] = size.to_bytes(4, "little")
        at = raw.find(b"PK\x01\x02", at + 4)
    return bytes(raw)


def _upload(worker, data: bytes) -> pb.ServerFrame:
    import hashlib

    with worker.session() as stream:
        bundle_id = "sha256:" + hashlib.sha256(data).hexdigest()
        stream.send(pb.ClientFrame(bundle=pb.BundleHeader(bundle_id=bundle_id, size=len(data))))
        stream.send_payload(data)
        return stream.receive()


HOSTILE_ARCHIVES = {
    "manifest inflating to 64 MiB": lambda: _zip({MANIFEST: b" " * (64 * 1024 * 1024)},
                                                 compression=zipfile.ZIP_DEFLATED),
    "manifest declaring 2 GiB": lambda: _declaring(_zip({MANIFEST: _manifest()}), MANIFEST, 2**31),
    "encrypted entry": lambda: _with_flag(_zip({MANIFEST: _manifest(), "m.py": b"x = 1"}), "m.py", 0x1),
    "bzip2 entry": lambda: _zip({MANIFEST: _manifest(), "m.py": b"x = 1"}, compression=zipfile.ZIP_BZIP2),
    "lzma entry": lambda: _zip({MANIFEST: _manifest(), "m.py": b"x = 1"}, compression=zipfile.ZIP_LZMA),
    "entry escaping": lambda: _zip({MANIFEST: _manifest(), "../up.py": b"x = 1"}),
    "duplicate entries": lambda: _duplicated(),
}


def _duplicated() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MANIFEST, _manifest())
        archive.writestr("m.py", b"x = 1")
        with pytest.warns(UserWarning):
            archive.writestr("m.py", b"x = 2")
    return buffer.getvalue()


def test_hostile_archives_are_refused_at_upload_with_invalid_argument(start_worker, tmp_path):
    worker = start_worker(cache_dir=tmp_path / "cache-hostile")
    server = server_pid(worker)
    before = rss(server)
    for what, build in HOSTILE_ARCHIVES.items():
        frame = _upload(worker, build())
        assert frame.WhichOneof("frame") == "failure", what
        assert frame.failure.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (what, frame.failure)
        assert "bundle" in frame.failure.details, (what, frame.failure.details)
    # Nothing was inflated (the 64 MiB manifest was judged by its declared size) and nothing stored.
    assert rss(server) < before + 48 * 1024 * 1024
    stored = [p.name for p in (tmp_path / "cache-hostile").rglob("*") if p.is_file()]
    assert stored == [], stored
    assert describe(worker).held == []


def test_a_full_disk_names_the_path(start_worker, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        worker = start_worker(cache_dir=small)
        data = _zip({MANIFEST: _manifest(), "blob.py": os.urandom(3 * 1024 * 1024)})
        frame = _upload(worker, data)
        assert frame.WhichOneof("frame") == "failure"
        assert frame.failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], frame.failure
        assert str(small) in frame.failure.details and "no space left" in frame.failure.details.lower()
        worker.stop()
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_replacement_killed_during_its_start_up_is_replaced_in_turn(tmp_path):
    """Found by the chaos test: when a dead worker's replacement died before it was ready, the slot
    stayed empty for good (recovery looked for the old address only)."""
    def own_pid():
        return os.getpid()

    with distributed_on(2, tmp_path / "cache") as queue:
        f = on(timeout=120, retries=3)(own_pid)
        assert {f() for _ in range(6)} == set(queue.pids())
        first, other = queue.pids()
        os.kill(first, signal.SIGKILL)
        assert wait_gone([first]) == []
        killed = None
        calls = f.submit()     # finds the dead worker (or the other one) and starts a replacement
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline:
            fresh = [pid for pid in queue.pids() if pid not in (first, other)]
            if fresh:
                killed = fresh[0]
                os.kill(killed, signal.SIGKILL)   # during its start-up
            time.sleep(0.005)
        assert killed is not None, "no replacement was started"
        assert calls.result(timeout=120) in (other, *queue.pids())
        deadline = time.monotonic() + 120
        seen: set = set()
        # (Until both slots serve: between the killed replacement's end and its own replacement's
        # start the queue lists one worker, which one round of calls can match.)
        while (seen != set(queue.pids()) or len(seen) < 2) and time.monotonic() < deadline:
            seen = {f() for _ in range(6)}
        assert seen == set(queue.pids()) and killed not in seen and len(seen) == 2, (seen, queue.pids())


# -- 16. calls spread evenly -------------------------------------------------------------------

@pytest.mark.parametrize("workers, calls", [(2, 40), (3, 60)])
def test_sequential_calls_spread_evenly_over_the_workers(tmp_path, workers, calls):
    with distributed_on(workers, tmp_path / "cache") as queue:
        f = on()(pid)
        seen = [f() for _ in range(calls)]
        counts = sorted(seen.count(p) for p in queue.pids())
    assert sum(counts) == calls
    assert counts[-1] - counts[0] <= 2, f"{calls} sequential calls on {workers} workers split {counts}"
