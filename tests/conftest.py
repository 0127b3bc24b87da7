"""Shared helpers: real worker processes, real sockets, real subprocesses."""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent

# The caller's bundle cache of the tests, and of the programs they run, is a
# temporary directory: never the user's ~/.cache (a test may point it elsewhere).
_BUNDLE_CACHE = tempfile.mkdtemp(prefix="turbolift-test-bundle-cache-")
os.environ.setdefault("TURBOLIFT_BUNDLE_CACHE", _BUNDLE_CACHE)
atexit.register(shutil.rmtree, _BUNDLE_CACHE, True)


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Create ``files`` (relative path -> source, dedented) under ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def child_env(cache_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TURBOLIFT_CACHE_DIR"] = str(cache_dir)
    env.pop("TURBOLIFT", None)
    env.pop("TURBOLIFT_CLUSTER", None)
    env.update(extra)
    return env


def run_python(args: list[str], cwd: Path, cache_dir: Path, timeout: float = 90,
               **env: str) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in ``cwd`` and capture its output."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=child_env(cache_dir, **env),
                          capture_output=True, text=True, timeout=timeout)


TIMEOUT = 120   # (what a run of a test program may take, on a busy machine)


def both(tmp_path, cache_dir, script: str, *extra: str, files: dict | None = None, env: dict | None = None):
    """(local run, distributed run) of ``app.py`` = ``script``, each checked to have succeeded."""
    write_files(tmp_path, {"app.py": script, **(files or {})})
    local = run_python(["app.py"], tmp_path, cache_dir, timeout=TIMEOUT, **(env or {}))
    remote = run_python(["-m", "turbolift", "--workers", "2", *extra, "app.py"], tmp_path, cache_dir,
                        timeout=TIMEOUT, **(env or {}))
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    return local, remote


def make_installed_library(site_dir: Path, name: str, version: str, source: str) -> Path:
    """Install a one-module distribution into ``site_dir`` as pip would lay it out."""
    package = site_dir / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(textwrap.dedent(source).lstrip())
    info = site_dir / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{name}\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return site_dir


def make_wheel(directory: Path, name: str, version: str, source: str) -> Path:
    """Write a pure-Python wheel of a one-module distribution (no build tools needed)."""
    import zipfile

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": textwrap.dedent(source).lstrip(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: turbolift-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
        f"{info}/top_level.txt": f"{name}\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


@contextlib.contextmanager
def distributed_on(workers: int, cache: Path) -> Iterator:
    """Distribution on, over a fresh LocalQueue of ``workers``; off again afterwards."""
    from turbolift import LocalQueue, _runtime
    from turbolift._enabling import switch

    queue = LocalQueue(workers=workers, cache_dir=str(cache))
    switch.enable(queue)
    try:
        yield queue
    finally:
        _runtime.disable()


@pytest.fixture
def cluster(tmp_path: Path):
    """Two local workers, for one test."""
    with distributed_on(2, tmp_path / "cluster-cache") as queue:
        yield queue


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    return path


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):   # (ESRCH: reaped between the open and the read)
        return True


def parent_of(pid: int) -> Optional[int]:
    """The parent pid of ``pid`` (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("PPid:"))
    except (OSError, StopIteration):
        return None


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """Wait until every pid is gone; return those still running."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if not process_gone(pid)]
        if alive:
            time.sleep(0.05)
    return alive


class WorkerProcess:
    """A ``turbolift worker`` started by hand, as on another host."""

    def __init__(self, cache_dir: Path, token_file: Optional[Path] = None, listen: str = "127.0.0.1:0",
                 cwd: Optional[Path] = None, extra_args: tuple = (), env: Optional[dict] = None) -> None:
        args = [sys.executable, "-m", "turbolift", "worker", "--listen", listen,
                "--cache-dir", str(cache_dir), *extra_args]
        if token_file is not None:
            args += ["--token-file", str(token_file)]
        self.process = subprocess.Popen(args, cwd=cwd or cache_dir, env=child_env(cache_dir, **(env or {})),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"worker did not start: {line!r} {self.process.stderr.read()}")
        self.address = line.rsplit(" ", 1)[1].strip()
        self._token_file = token_file

    @property
    def token(self) -> Optional[str]:
        """This worker's token: its --token-file's, or the one it made itself (None: it has none)."""
        from turbolift._wire.auth import discovered_token

        if self._token_file is not None:
            return Path(self._token_file).read_text().strip()
        return discovered_token(self.address)

    @property
    def metadata(self) -> tuple:
        """Call metadata with this worker's token (for the unary Describe)."""
        from turbolift._wire.auth import metadata_for

        return metadata_for(self.token)

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A Session stream to this worker with the handshake done (the caller's own Stream)."""
        import grpc

        from turbolift._caller.session import Stream

        with grpc.insecure_channel(self.address) as channel:
            stream = Stream(channel, self.address)
            stream.handshake(self.token)
            try:
                yield stream
            finally:
                stream.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


@pytest.fixture
def start_worker(tmp_path: Path):
    started: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        kwargs.setdefault("cache_dir", tmp_path / f"worker-cache-{len(started)}")
        kwargs["cache_dir"].mkdir(exist_ok=True)
        worker = WorkerProcess(**kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
