"""The trust boundary, against real workers: who may call a worker, what is read before that, and
what a caller will not do for a peer that cannot prove it is the worker.

Tests about other users create a second local user (as root; skipped with
the reason otherwise) and run its side with Debian's /usr/bin/python3 and a
copy of the packages it needs in a directory that user may read.
"""
from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest
from conftest import REPO, WorkerProcess, child_env, run_python, write_files

from turbolift import Workers, _runtime, on
from turbolift._enabling import switch
from turbolift.errors import ClusterError
from turbolift.v1 import worker_pb2 as pb

SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = ("grpc", "grpc_health", "google", "dill", "importlib_metadata", "zipp", "typing_extensions.py")


# -- a second local user ------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_user(tmp_path_factory):
    """A second local user, and a directory it can read holding turbolift and what it imports."""
    if os.geteuid() != 0:
        pytest.skip("creating a second local user needs root")
    if not (shutil.which("useradd") and shutil.which("runuser") and os.path.exists(SYSTEM_PYTHON)):
        pytest.skip("needs useradd, runuser and /usr/bin/python3")
    check = "import sys; sys.exit(sys.version_info[:2] != (3, 11))"
    if subprocess.run([SYSTEM_PYTHON, "-c", check]).returncode:
        pytest.skip("the system Python is not 3.11, so the copied compiled packages would not load")
    name = f"tlother{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    try:
        home = tmp_path_factory.mktemp("other-user")
        shared = home / "site"
        import grpc as grpc_package

        site = Path(grpc_package.__file__).resolve().parent.parent
        shared.mkdir()
        for package in PACKAGES:
            if package.endswith(".py"):
                shutil.copy(site / package, shared / package)
            else:
                shutil.copytree(site / package, shared / package)
        shutil.copytree(REPO / "turbolift", shared / "turbolift",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in (home, *home.parents):
            if path == Path("/"):
                break
            path.chmod(path.stat().st_mode | 0o055)  # let the other user reach its files (tmp dirs are 0700)
        subprocess.run(["chmod", "-R", "a+rX", str(home)], check=True)
        work = home / "work"
        work.mkdir()
        os.chown(work, pwd.getpwnam(name).pw_uid, grp.getgrnam(name).gr_gid)
        yield {"name": name, "uid": pwd.getpwnam(name).pw_uid, "site": shared, "work": work}
    finally:
        subprocess.run(["userdel", name], check=False)


def as_other_user(user: dict, args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(user["site"]), "HOME": str(user["work"]),
           "XDG_CACHE_HOME": str(user["work"] / "cache")}
    return subprocess.run(["runuser", "-u", user["name"], "--", "env", *[f"{k}={v}" for k, v in env.items()],
                           SYSTEM_PYTHON, *args], cwd=user["work"], capture_output=True, text=True,
                          timeout=timeout)


ATTACK = """
    import os
    from turbolift import on

    @on()
    def plant(path):
        open(path, "w").write(f"ran as uid {os.getuid()}")
        return os.getuid()

    print("planted by", plant("{marker}"))
"""


def test_a_default_worker_refuses_another_local_user_and_serves_its_own(other_user, tmp_path, cache_dir,
                                                                       start_worker):
    worker = start_worker()  # no --token-file: it makes a token of its own
    try:
        marker = tmp_path / "planted"
        marker_dir = tmp_path
        marker_dir.chmod(0o777)
        (other_user["work"] / "app.py").write_text(textwrap.dedent(ATTACK).replace("{marker}", str(marker)))
        os.chown(other_user["work"] / "app.py", other_user["uid"], -1)
        cluster = f"grpc://{worker.address}"
        attacked = as_other_user(other_user, ["-m", "turbolift", "--cluster", cluster, "app.py"])
        assert attacked.returncode != 0, attacked.stdout
        assert "token" in attacked.stderr, attacked.stderr
        assert not marker.exists(), "another local user ran code through a default worker"
        # The worker's own user needs no flag: it finds the token the worker wrote for it.
        write_files(tmp_path / "own", {"app.py": ATTACK.replace("{marker}", str(tmp_path / "own.txt"))})
        own = run_python(["-m", "turbolift", "--cluster", cluster, "app.py"], tmp_path / "own", cache_dir)
        assert own.returncode == 0 and "planted by 0" in own.stdout, own.stderr
    finally:
        worker.stop()


def test_allow_any_local_user_says_what_it_means(other_user, tmp_path, start_worker):
    """The control of the test above: with the explicit flag, the other user's code runs as root."""
    worker = start_worker(extra_args=("--allow-any-local-user",))
    try:
        marker = tmp_path / "planted"
        tmp_path.chmod(0o777)
        (other_user["work"] / "app.py").write_text(textwrap.dedent(ATTACK).replace("{marker}", str(marker)))
        cluster = f"grpc://{worker.address}"
        run = as_other_user(other_user, ["-m", "turbolift", "--cluster", cluster, "app.py"])
        assert run.returncode == 0, run.stderr
        assert marker.read_text() == "ran as uid 0"
    finally:
        worker.stop()


def test_an_empty_or_unreadable_token_file_stops_the_worker(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for token_file, says in ((empty, "is empty"), (tmp_path / "missing", "cannot read the token file")):
        started = subprocess.run([sys.executable, "-m", "turbolift", "worker", "--listen", "127.0.0.1:0",
                                  "--token-file", str(token_file), "--cache-dir", str(tmp_path / "c")],
                                 env=child_env(tmp_path / "c"), capture_output=True, text=True, timeout=60)
        assert started.returncode == 2 and says in started.stderr, started.stderr


def test_a_cache_that_belongs_to_another_user_is_refused(other_user, tmp_path):
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o755)
    os.chown(cache, other_user["uid"], -1)
    started = subprocess.run([sys.executable, "-m", "turbolift", "worker", "--listen", "127.0.0.1:0",
                              "--cache-dir", str(cache), "--no-restart"], env=child_env(cache),
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 2 and "belongs to another user" in started.stderr, started.stderr


# -- a process that took over the worker's address --------------------------------------

IMPOSTOR = """
    import json, sys, time
    from concurrent import futures
    import grpc

    log = open(sys.argv[2], "a")

    def note(kind, context, detail=""):
        log.write(json.dumps({"kind": kind, "metadata": [list(m) for m in context.invocation_metadata()],
                              "detail": detail}) + "\\n")
        log.flush()

    def session(frames, context):
        for frame in frames:
            note("frame", context, frame.hex())
            # Pretend: a challenge with a proof made without the token.
            yield bytes.fromhex("0a44") + b"\\x0a\\x20" + b"n" * 32 + b"\\x12\\x20" + b"p" * 32

    def unary(request, context):
        note("unary", context)
        return b""

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(8))
    checker = health.HealthServicer()
    checker.set("turbolift.v1.Worker", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)   # it even looks healthy
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("turbolift.v1.Worker", {
        "Session": grpc.stream_stream_rpc_method_handler(session),
        "Call": grpc.unary_unary_rpc_method_handler(unary),
        "Describe": grpc.unary_unary_rpc_method_handler(unary),
    }),))
    server.add_insecure_port(sys.argv[1])
    server.start()
    print("impostor up", flush=True)
    server.wait_for_termination()
"""


def test_a_caller_sends_nothing_secret_to_and_unpickles_nothing_from_an_impostor(tmp_path, start_worker):
    token_file = tmp_path / "token"
    token_file.write_text(secrets.token_hex(16))
    worker = start_worker(token_file=token_file)
    address = worker.address
    worker.stop()
    log = tmp_path / "impostor.log"
    write_files(tmp_path, {"impostor.py": IMPOSTOR})
    impostor = subprocess.Popen([sys.executable, str(tmp_path / "impostor.py"), address, str(log)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert impostor.stdout.readline().strip() == "impostor up"
        switch.enable(Workers(address, token_file=str(token_file)))
        try:
            with pytest.raises(ClusterError, match="could not prove it holds the workers' token"):
                on()(len)([1, 2])
        finally:
            _runtime.disable()
        entries = [line for line in log.read_text().splitlines()] if log.exists() else []
        assert entries, "the caller never reached the impostor: the test proves nothing"
        import json

        seen = [json.loads(line) for line in entries]
        assert all(entry["kind"] == "frame" for entry in seen), seen      # no unary call with a token
        assert len(seen) == 1, "after the impostor's bad proof the caller sent nothing more"
        assert not any(key == "authorization" for entry in seen for key, _ in entry["metadata"])
        hello = pb.ClientFrame.FromString(bytes.fromhex(seen[0]["detail"]))
        assert hello.WhichOneof("frame") == "hello"
        assert token_file.read_text() not in log.read_text()
    finally:
        impostor.kill()
        impostor.wait()


# -- what is read before authentication ----------------------------------------------------

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def server_pid(worker: WorkerProcess) -> int:
    from turbolift.v1 import worker_pb2_grpc as pb_grpc

    with grpc.insecure_channel(worker.address) as channel:
        return pb_grpc.WorkerStub(channel).Describe(pb.DescribeRequest(), timeout=30,
                                                    metadata=worker.metadata).pid


def test_a_large_tokenless_message_is_refused_before_it_is_read(start_worker):
    worker = start_worker()
    try:
        pid = server_pid(worker)
        before = rss_kib(pid)
        big = b"\x0a" + b"x" * (256 * 1024 * 1024)
        options = [("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(worker.address, options=options) as channel:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary("/turbolift.v1.Worker/Call")(big, timeout=60)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
            assert time.monotonic() - started < 30
            # Health checks are open to all: a huge one is answered (SERVING) without being read.
            try:
                channel.unary_unary("/grpc.health.v1.Health/Check")(big, timeout=60)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED), exc
        grown = rss_kib(pid) - before
        assert grown < 64 * 1024, f"the worker grew by {grown} KiB receiving messages it refused"
    finally:
        worker.stop()


def test_tokenless_rpcs_that_never_send_their_message_leave_health_and_calls_prompt(start_worker):
    worker = start_worker()
    stalled = threading.Event()
    try:
        channel = grpc.insecure_channel(worker.address)

        def never():  # a request stream that never yields: headers sent, no message
            stalled.wait(120)
            return
            yield  # (unreachable: makes this a generator)

        pending = [channel.stream_unary("/turbolift.v1.Worker/Call").future(never(), timeout=120)
                   for _ in range(150)]
        pending += [channel.stream_unary("/grpc.health.v1.Health/Check").future(never(), timeout=120)
                    for _ in range(20)]
        time.sleep(2.0)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(worker.address) as probe:
            for _ in range(5):
                started = time.monotonic()
                reply = health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                assert time.monotonic() - started < 1.0
        switch.enable(Workers(worker.address))
        try:
            started = time.monotonic()
            assert on()(len)([1, 2, 3]) == 3
            assert time.monotonic() - started < 10.0
        finally:
            _runtime.disable()
        for future in pending:
            future.cancel()
        channel.close()
    finally:
        stalled.set()
        worker.stop()
