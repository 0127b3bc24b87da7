"""``turbolift status [CLUSTER]``: what every worker of a cluster is doing.

Without CLUSTER it shows the local clusters of this user's running
programs: each ``LocalQueue`` keeps its workers' unix sockets in a private
``turbolift-run-*`` directory of the temporary directory, which is where
they are found (the program is the workers' parent process). With a
``grpc://`` or ``grpcs://`` URL it asks those workers, with the token as a
caller would find it (``?token_file=``, ``--token-file``,
``$TURBOLIFT_TOKEN_FILE``, or the file a worker of this user wrote). With
``k8s://NAMESPACE?run_id=RUN&attach=1`` it follows the pods of that run
(``hostname`` is then the pod's name) with the run's token.

Each worker answers a Describe over a Session stream (so it proves it holds
the token before anything it says is read).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional, Sequence
from urllib.parse import parse_qs, urlsplit

from .._wire.auth import discovered_token, read_token
from ..errors import TurboliftError
from ..platforms.local import running_local_workers
from ..platforms.registry import resolve
from ..platforms.static import Workers
from .connection import Connection
from .units import size


def describe(address: str, token: Optional[str], tls: Any = None, timeout: float = 10.0) -> dict:
    """One worker's state as a plain dict (``error`` set when it could not be asked)."""
    connection = Connection(address, tls, token if token is not None else discovered_token(address))
    try:
        stream = connection.checkout(time.monotonic() + timeout)
        try:
            reply = stream.describe()
        finally:
            connection.discard(stream)
    except Exception as exc:   # noqa: BLE001  (an unreachable worker is a row of the report, not a crash)
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return {"address": address, "error": details or type(exc).__name__}
    finally:
        connection.close()
    return {
        "address": address, "worker_id": reply.worker_id, "pid": reply.pid, "hostname": reply.hostname,
        "program_pid": _parent_of(reply.pid) if address.startswith("unix:") else None,
        "python": f"{reply.implementation} {reply.python_version}", "turbolift": reply.turbolift_version,
        "uptime_seconds": round(max(0.0, time.time() - reply.started), 1) if reply.started else None,
        "calls_running": reply.calls_running, "calls_served": reply.calls_served, "slots": reply.slots,
        "bundles": [{"id": held.bundle_id, "bytes": held.size} for held in reply.held],
        "memory_rss": reply.memory_rss, "memory_peak": reply.memory_peak,
        "previous_exit": reply.previous_exit or None,
    }


def _parent_of(pid: int) -> Optional[int]:
    """The program a local worker belongs to: its parent, or its template's parent when a template
    (``turbolift worker --template-fd``, see ``turbolift._worker.template``) forked it."""
    parent = _ppid(pid)
    if parent is not None and "--template-fd" in _command_line(parent):
        return _ppid(parent)
    return parent


def _ppid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("PPid:"))
    except (OSError, StopIteration, ValueError):
        return None


def _command_line(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def human(rows: list[dict]) -> str:
    if not rows:
        return "no workers found (no local cluster of yours is running; give a cluster URL)"
    lines = []
    for row in rows:
        if "error" in row:
            lines.append(f"{row['address']}: not answering: {row['error']}")
            continue
        program = f", program pid {row['program_pid']}" if row.get("program_pid") else ""
        held = sum(bundle["bytes"] for bundle in row["bundles"])
        lines.append(f"{row['worker_id']}  {row['address']}")
        lines.append(f"    pid {row['pid']} on {row['hostname']}{program}; {row['python']}, turbolift "
                     f"{row['turbolift']}; up {row['uptime_seconds']:.0f} s")
        calls = f"{row['calls_running']} running of {row['slots']} slots, {row['calls_served']} served"
        memory = f"{size(row['memory_rss'])} (peak {size(row['memory_peak'])})"
        lines.append(f"    calls: {calls}; bundles: {len(row['bundles'])} ({size(held)}); memory {memory}")
        if row["previous_exit"]:
            lines.append(f"    the previous server process at this address ended: {row['previous_exit']}")
    return "\n".join(lines)


def describe_cluster(cluster: Any, timeout: float = 60.0) -> list[dict]:
    """The workers of a running cluster object (an attached Kubernetes run): followed, asked, let go."""
    cluster.start()
    try:
        addresses = cluster.wait_ready(timeout)
        return [describe(address, cluster.token, cluster.tls) for address in addresses]
    finally:
        cluster.stop()


def gather(cluster: Optional[str], token_file: Optional[str]) -> list[dict]:
    if cluster is None:
        return [describe(address, None) for address in running_local_workers()]
    if cluster.startswith("k8s://"):
        query = parse_qs(urlsplit(cluster).query)
        if "run_id" not in query or query.get("attach", ["0"])[-1] not in ("1", "true", "yes"):
            raise TurboliftError("give the run to inspect: k8s://NAMESPACE?run_id=RUN&attach=1 (status "
                                 "never starts a run; `kubectl get deploy -l "
                                 "app.kubernetes.io/managed-by=turbolift` lists them)")
        return describe_cluster(resolve(cluster))
    if not cluster.startswith(("grpc://", "grpcs://")):
        raise TurboliftError(f"turbolift status reads grpc://, grpcs:// and k8s://...&attach=1 URLs (or, "
                             f"with no URL, your local clusters), not {cluster!r}")
    workers = Workers.from_url(cluster)
    token = workers.token if workers.token is not None else read_token(None, token_file)
    return [describe(address, token, workers.tls) for address in workers.addresses]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="turbolift status", description="Show every worker of a cluster: address, process, versions, "
        "uptime, calls, bundles, memory. Without CLUSTER: the local clusters of your running programs.")
    parser.add_argument("cluster", nargs="?", metavar="CLUSTER",
                        help="grpc://host:port,..., grpcs://... or k8s://NAMESPACE?run_id=RUN&attach=1")
    parser.add_argument("--token-file", help="the workers' token (default: as a caller finds it)")
    parser.add_argument("--json", action="store_true", help="print JSON (a list of workers)")
    parser.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C")
    parser.add_argument("--count", type=int, help="with --watch: stop after this many refreshes")
    opts = parser.parse_args(list(argv))
    shown = 0
    try:
        while True:
            try:
                rows = gather(opts.cluster, opts.token_file)
            except TurboliftError as exc:
                print(f"turbolift status: {exc}", file=sys.stderr)
                return 2
            if opts.watch is not None and not opts.json and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")   # redraw in place on a terminal
            print(json.dumps(rows, indent=2) if opts.json else human(rows), flush=True)
            shown += 1
            if opts.watch is None or (opts.count is not None and shown >= opts.count):
                return 0 if all("error" not in row for row in rows) else 1
            time.sleep(max(0.1, opts.watch))
    except (KeyboardInterrupt, BrokenPipeError):   # Ctrl-C ends --watch; `| head` may stop reading
        return 0
