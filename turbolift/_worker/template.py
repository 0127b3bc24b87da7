"""A template process that forks local workers, so that only it pays for their imports.

A worker spends most of its start-up importing gRPC, protobuf, dill and
turbolift's own modules (about 250 ms of CPU). Started as fresh
interpreters, N local workers pay that N times, on the same cores as the
program that is starting too. A local cluster instead starts one template
(``turbolift worker --template-fd N``): it imports the worker's modules,
then forks a worker for each request of its caller. It never creates a
gRPC object or a thread, so each child starts from modules imported but no
gRPC state, the state in which gRPC supports fork, and builds its own server
as a fresh worker would.

A child is a worker in every other way: the caller hands it its own stdin
pipe and ready pipe (passed over the control socket), so that the token,
``--exit-with-stdin`` and the address it reports work as for a worker the
caller started itself. The template reaps its children and reports how
each ended. When the caller goes, the template exits, and so do the
children: they see their stdin close and their parent change.

This module is the template's side (:func:`serve`); :mod:`.forked` is the
caller's. It imports no gRPC: the caller's side imports it.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from typing import Optional

TEMPLATE_OPTION = "--template-fd"
def worker_command(args: list) -> list:
    """``python -m turbolift worker ARGS``, with this interpreter."""
    return [sys.executable, "-m", "turbolift", "worker", *args]


MESSAGE_BYTES = 65536   # the largest request or answer on the control socket
_LOOK_SECONDS = 1.0     # how often the template looks whether its program is still there


# -- in the template ---------------------------------------------------------------------

def serve(control_fd: int) -> Optional[list[str]]:
    """Fork a worker for each request on ``control_fd`` until the caller closes it; None then.

    In a forked child this returns instead the worker's arguments, with
    ``--ready-fd``: the child goes on to run the worker with them, and
    exits as a worker does. So nothing here may hold a lock, a thread or a
    ``finally`` that the child would inherit.
    """
    control = socket.socket(fileno=control_fd)
    program = os.getppid()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)   # (only to wake the select below)
    while True:
        readable, _, _ = select.select([control, wake_read], [], [], _LOOK_SECONDS)
        if os.getppid() != program:
            return None   # the program is gone (its forked children may hold our socket open)
        if wake_read in readable:
            _drain(wake_read)
            if not _report_exits(control):
                return None
        if control not in readable:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(control, MESSAGE_BYTES, 2)
        except OSError:
            return None
        if not message:
            return None   # the caller closed its end: it is done with us (or gone)
        try:
            request = json.loads(message)
            stdin_fd, ready_fd = fds
        except ValueError:   # (never from our caller, which refuses larger requests): not a worker
            for fd in fds:
                os.close(fd)
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            print(f"turbolift: could not fork a worker: {exc}", file=sys.stderr, flush=True)
            pid = -1
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            control.close()
            os.close(wake_read)
            os.close(wake_write)
            return _become_worker(request, stdin_fd, ready_fd)
        os.close(stdin_fd)
        os.close(ready_fd)
        answer = {"id": request["id"], "pid": pid} if pid > 0 else {"id": request["id"], "failed": True}
        if not _send(control, answer):
            return None


def _become_worker(request: dict, stdin_fd: int, ready_fd: int) -> list[str]:
    """(In the forked child.) Be what a worker started on its own would be, as far as its code can
    tell: its own session and process group, the caller's environment of now, its own stdin, a
    multiprocessing key of its own. Return its arguments."""
    os.setsid()
    os.dup2(stdin_fd, 0)
    os.close(stdin_fd)
    for key in request["env"]["unset"]:
        os.environ.pop(key, None)
    os.environ.update(request["env"]["set"])
    process = sys.modules.get("multiprocessing.process")
    if process is not None:   # (made at its import, in the template: each worker gets its own)
        process.current_process().authkey = os.urandom(32)
    return [*request["args"], "--ready-fd", str(ready_fd)]


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _report_exits(control: socket.socket) -> bool:
    """Reap every child that ended and tell the caller how; False when the caller is gone."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return True
        if not _send(control, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)}):
            return False


def _send(control: socket.socket, answer: dict) -> bool:
    try:
        control.send(json.dumps(answer).encode())
        return True
    except OSError:
        return False
