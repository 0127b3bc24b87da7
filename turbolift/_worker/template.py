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

Both halves live here: :func:`serve` runs in the template,
:class:`Template` and :class:`ForkedProcess` in the caller. This module
imports no gRPC: the launcher, which ``import turbolift`` loads, uses it.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Optional, Sequence

TEMPLATE_OPTION = "--template-fd"
_MESSAGE = 65536
_ANSWER_SECONDS = 5.0   # how long ``pid`` waits for the template to answer
_ORPHAN_LOOK = 0.1      # how often a wait looks at a child whose template ended first
_REPORT_SECONDS = 1.0   # how long an ended child's report may take before it is not waited for


# -- in the template ---------------------------------------------------------------------

def serve(control_fd: int) -> Optional[list[str]]:
    """Fork a worker for each request on ``control_fd`` until the caller closes it; None then.

    In a forked child this returns instead the worker's arguments, with
    ``--ready-fd``: the child goes on to run the worker with them, and
    exits as a worker does. So nothing here may hold a lock, a thread or a
    ``finally`` that the child would inherit.
    """
    control = socket.socket(fileno=control_fd)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)   # (only to wake the select below)
    while True:
        readable, _, _ = select.select([control, wake_read], [], [])
        if wake_read in readable:
            _drain(wake_read)
            if not _report_exits(control):
                return None
        if control not in readable:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(control, _MESSAGE, 2)
        except OSError:
            return None
        if not message:
            return None   # the caller closed its end: it is done with us (or gone)
        request = json.loads(message)
        stdin_fd, ready_fd = fds
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
            os.dup2(stdin_fd, 0)
            os.close(stdin_fd)
            return [*request["args"], "--ready-fd", str(ready_fd)]
        os.close(stdin_fd)
        os.close(ready_fd)
        answer = {"id": request["id"], "pid": pid} if pid > 0 else {"id": request["id"], "failed": True}
        if not _send(control, answer):
            return None


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


# -- in the caller -------------------------------------------------------------------------

def available() -> bool:
    """True where a template can run: fork, descriptors over unix sockets, and pidfds (Linux 5.3+)."""
    return (sys.platform.startswith("linux") and hasattr(os, "pidfd_open")
            and hasattr(signal, "pidfd_send_signal"))


class ForkedProcess:
    """A worker forked by a :class:`Template`, as much of ``subprocess.Popen`` as the launcher uses:
    ``stdin``, ``pid``, ``poll``, ``wait``, ``terminate``, ``kill``, ``returncode``.

    Its pid is known once the template answers (None before, or when it
    could not fork), its return code once the template reports the exit.
    Signals go through a pidfd, so they never reach another process that
    took the pid of one that ended.
    """

    def __init__(self, template: "Template", stdin: Any) -> None:
        self.stdin = stdin
        self.returncode: Optional[int] = None
        self._template = template
        self._pid: Optional[int] = None
        self._pidfd: Optional[int] = None
        self._settled = threading.Condition()

    @property
    def pid(self) -> Optional[int]:
        with self._settled:
            self._settled.wait_for(lambda: self._pid is not None or self.returncode is not None,
                                   _ANSWER_SECONDS)
            return self._pid

    @property
    def forked(self) -> bool:
        return self._pid is not None

    def poll(self) -> Optional[int]:
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        unreported: Optional[float] = None   # since when the process is seen ended, unreported
        with self._settled:
            while self.returncode is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired("turbolift worker", timeout)  # type: ignore[arg-type]
                # Woken by the template's report. Looked at meanwhile: an orphan (its template
                # ended first), or a template that does not report (stopped), never waited on for good.
                self._settled.wait(_ORPHAN_LOOK if left is None else min(_ORPHAN_LOOK, left))
                if self.returncode is None and self._exited():
                    unreported = unreported or time.monotonic()
                    if self._template.gone or time.monotonic() - unreported > _REPORT_SECONDS:
                        self._end(self._template.returncode)
            return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        with self._settled:
            if self.returncode is None and (self._pid is None or self._template.gone):
                # Not forked yet (it will find its stdin closed and exit), or an orphan nobody
                # reports on: either way nothing is left to wait for.
                self._end(-signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        with self._settled:   # (held: the pidfd is closed under it once the process ended)
            if self._pidfd is not None and self.returncode is None:
                try:
                    signal.pidfd_send_signal(self._pidfd, signum)
                except ProcessLookupError:
                    pass

    def _exited(self) -> bool:
        if self._pidfd is None:
            return True
        return bool(select.select([self._pidfd], [], [], 0)[0])   # readable once the process ended

    def _forked(self, pid: Optional[int]) -> None:
        with self._settled:
            if pid is not None:
                try:
                    self._pidfd = os.pidfd_open(pid)
                except ProcessLookupError:   # ended already; its report follows
                    pass
                self._pid = pid
            elif self.returncode is None:
                self._end(1)   # not forked: the template said why on stderr, or is gone
            self._settled.notify_all()

    def _end(self, returncode: Optional[int]) -> None:
        """(Under ``_settled``.) The process ended with ``returncode``."""
        self.returncode = 1 if returncode is None else returncode
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._settled.notify_all()

    def _ended(self, returncode: int) -> None:
        with self._settled:
            if self.returncode is None:
                self._end(returncode)


class Template:
    """The caller's handle on a template process started with ``env`` in ``cwd``."""

    def __init__(self, env: dict, cwd: Optional[str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [sys.executable, "-m", "turbolift", "worker", TEMPLATE_OPTION, str(theirs.fileno())]
        try:
            # A new session, as for every local worker: Ctrl-C in the terminal is the caller's.
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                            pass_fds=(theirs.fileno(),), start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._control = ours
        self._lock = threading.Lock()
        self._requests = 0
        self._waiting: dict[int, ForkedProcess] = {}   # request id -> not answered yet
        self._children: dict[int, ForkedProcess] = {}  # pid -> running
        self.gone = False
        self._reader = threading.Thread(target=self._read_answers, name="turbolift-template", daemon=True)
        self._reader.start()

    @property
    def returncode(self) -> Optional[int]:
        return self.process.poll()

    @property
    def serving(self) -> bool:
        return not self.gone and self.process.poll() is None

    @property
    def starting(self) -> bool:
        """True while some worker asked for is not forked yet."""
        with self._lock:
            return bool(self._waiting)

    def spawn(self, args: Sequence[str], ready_write: int) -> ForkedProcess:
        """Ask for a worker run with ``args`` that reports on ``ready_write`` (the caller's copy stays
        open: close it once this returns). It is forked once the template has its imports."""
        stdin_read, stdin_write = os.pipe()
        process = ForkedProcess(self, os.fdopen(stdin_write, "wb"))
        with self._lock:
            self._requests += 1
            request = self._requests
            self._waiting[request] = process
        message = json.dumps({"id": request, "args": list(args)}).encode()
        try:
            socket.send_fds(self._control, [message], [stdin_read, ready_write])
        except OSError:
            with self._lock:
                self._waiting.pop(request, None)
            process._forked(None)
        finally:
            os.close(stdin_read)
        return process

    def _read_answers(self) -> None:
        while True:
            try:
                message = self._control.recv(_MESSAGE)
            except OSError:
                message = b""
            if not message:
                break
            answer = json.loads(message)
            with self._lock:
                if "exited" in answer:
                    child = self._children.pop(answer["exited"], None)
                else:
                    child = self._waiting.pop(answer["id"], None)
                    if child is not None and answer.get("pid"):
                        self._children[answer["pid"]] = child
            if child is None:
                continue
            if "exited" in answer:
                child._ended(answer["returncode"])
            else:
                child._forked(answer.get("pid"))
        try:
            self.process.wait(5.0)   # (it closed its end: it is exiting)
        except subprocess.TimeoutExpired:
            pass
        with self._lock:
            self.gone = True
            waiting, self._waiting = list(self._waiting.values()), {}
            children = list(self._children.values())
        for process in waiting:
            process._forked(None)
        for process in children:   # orphans now: their waits look at them
            with process._settled:
                process._settled.notify_all()

    def close(self, grace: float = 2.0) -> None:
        """End the template (the caller stops its workers first; an orphan exits when it sees its
        parent change). It is terminated: it ran no user code and holds nothing to flush, and
        finalising its modules would only delay the caller's exit."""
        try:
            self._control.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(grace)
        self._control.close()
