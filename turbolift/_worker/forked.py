"""The caller's side of the local workers' template (:mod:`.template`): starting it, asking it
for workers, and following them as ``subprocess.Popen`` would follow children of its own.

A request leaves from a thread of its own (the socket holds a couple of
hundred, and the template reads none until it has its imports), so asking
never blocks. A worker the template will not fork (it was killed, or
stopped answering) is said to be *abandoned*: the launcher then starts that
worker afresh. Ends the template cannot report (it was killed; it is
stopped) are noticed through each worker's pidfd and never waited on for
more than ``_REPORT_SECONDS`` in all.

This module imports no gRPC: the launcher, which ``import turbolift`` loads, uses it.
"""
from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Optional, Sequence

from .template import MESSAGE_BYTES, TEMPLATE_OPTION, worker_command

_ANSWER_SECONDS = 5.0   # a request unanswered this long, by a template that answers others: stuck
_ORPHAN_LOOK = 0.1      # how often a wait looks at a child whose template ended first
_REPORT_SECONDS = 1.0   # how long an ended child's report may take before it is not waited for


_AVAILABLE: list = []
_TEMPLATES: "weakref.WeakSet[Template]" = weakref.WeakSet()


def _forked_program() -> None:
    """In a child the program forks (a daemon, a multiprocessing worker): let go of the templates'
    control sockets and the workers' stdin pipes, which would keep them alive as long as it lives."""
    for template in list(_TEMPLATES):
        template.let_go()


os.register_at_fork(after_in_child=_forked_program)


def available() -> bool:
    """True where a template can run: fork, descriptors over unix sockets, and pidfds (Linux 5.3+,
    and not refused by a seccomp profile). Probed once."""
    if not _AVAILABLE:
        works = sys.platform.startswith("linux") and hasattr(signal, "pidfd_send_signal")
        if works:
            try:
                os.close(os.pidfd_open(os.getpid()))
            except (AttributeError, OSError):
                works = False
        _AVAILABLE.append(works)
    return _AVAILABLE[0]


def _pidfd_ended(fd: int) -> bool:
    """True once the process of pidfd ``fd`` ended (poll, not select: any descriptor number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class ForkedProcess:
    """A worker forked by a :class:`Template`, as much of ``subprocess.Popen`` as the launcher uses:
    ``stdin``, ``pid``, ``poll``, ``wait``, ``terminate``, ``kill``, ``returncode``; and
    ``exit_description`` when its end is known only in part (its template did not report it).

    Its pid is known once the template answers (None before, or when it
    could not fork), its return code once the template reports the exit.
    Signals go through a pidfd, so they never reach another process that
    took the pid of one that ended.
    """

    def __init__(self, template: "Template", stdin: Any) -> None:
        self.stdin = stdin
        self.returncode: Optional[int] = None
        self.exit_description: Optional[str] = None
        self._template = template
        self._asked = time.monotonic()
        self._pid: Optional[int] = None
        self._pidfd: Optional[int] = None
        self._settled = threading.Condition()

    @property
    def pid(self) -> Optional[int]:
        """The pid, once the template said it (None until then)."""
        return self._pid

    def wait_pid(self, timeout: float) -> Optional[int]:
        """The pid, waiting up to ``timeout`` for the template's answer (a worker that reported
        ready has been forked: its answer is on its way)."""
        with self._settled:
            self._settled.wait_for(lambda: self._pid is not None or self.returncode is not None, timeout)
            return self._pid

    def abandoned(self) -> bool:
        """True when it will not be forked: its template is gone, or answered others but not this
        request in ``_ANSWER_SECONDS`` (stopped, say). Its stdin is then closed, so that a fork
        that happens after all exits at once."""
        with self._settled:
            if self._pid is not None:
                return False
            template = self._template
            if self.returncode is None and not (template.gone or template.stuck(self._asked)):
                return False
            if self.returncode is None:
                self._end(1, "was never forked: its template stopped answering")
        try:
            self.stdin.close()
        except OSError:
            pass
        return True

    def poll(self) -> Optional[int]:
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._settled:
            while self.returncode is None:
                # Settled by the template's report. Looked at meanwhile: an orphan (its template
                # ended first), or a template that does not report (stopped), never waited on for good.
                self._unreported()
                if self.returncode is not None:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired("turbolift worker", timeout)  # type: ignore[arg-type]
                self._settled.wait(_ORPHAN_LOOK if left is None else min(_ORPHAN_LOOK, left))
            return self.returncode

    def _unreported(self) -> None:
        """(Under ``_settled``.) Settle an end the template cannot or does not report."""
        template = self._template
        if self._pid is None:
            if template.gone:
                self._end(1, "was never forked: its template process ended")
            return
        if template.gone:
            try:   # reparented to this process (a subreaper, or PID 1 of a container): reap it
                pid, status = os.waitpid(self._pid, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid:
                self._end(os.waitstatus_to_exitcode(status))
                return
        if self._pidfd is not None and not _pidfd_ended(self._pidfd):
            return
        if template.gone:
            self._end(0, "left after its template process ended")
        elif template.overdue():
            self._end(0, "ended; its template did not report how")

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        with self._settled:
            if self.returncode is None and self._pid is None:
                # Not forked: it would find its stdin closed and exit, nothing to wait for.
                self._end(-signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        with self._settled:   # (held: the pidfd is closed under it once the process ended)
            if self._pidfd is not None and self.returncode is None:
                try:
                    signal.pidfd_send_signal(self._pidfd, signum)
                except ProcessLookupError:
                    pass

    def _forked(self, pid: Optional[int], why: str = "could not be forked (its template said why above)",
                ) -> None:
        with self._settled:
            if self.returncode is not None:
                return
            if pid is not None:
                try:
                    self._pidfd = os.pidfd_open(pid)
                except OSError:   # ended already (its report follows), or refused: signals go by pid
                    pass
                self._pid = pid
            else:
                self._end(1, why)
            self._settled.notify_all()

    def _end(self, returncode: int, description: Optional[str] = None) -> None:
        """(Under ``_settled``.) The process ended with ``returncode``."""
        self.returncode = returncode
        self.exit_description = description
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
        command = worker_command([TEMPLATE_OPTION, str(theirs.fileno())])
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
        self._env = dict(env)   # what the template has: requests carry only what changed since
        self._lock = threading.Lock()
        self._requests = 0
        self._waiting: dict[int, ForkedProcess] = {}   # request id -> not answered yet
        self._children: dict[int, ForkedProcess] = {}  # pid -> running
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._answered: Optional[float] = None         # when it last answered anything
        self._unreported_since: Optional[float] = None  # a child seen ended, not reported since
        self.gone = False
        _TEMPLATES.add(self)
        self._reader = threading.Thread(target=self._read_answers, name="turbolift-template", daemon=True)
        self._reader.start()
        # Requests leave from a thread of their own: the socket holds a couple of hundred, and
        # the template reads none until it has its imports; spawning never blocks.
        threading.Thread(target=self._send_requests, name="turbolift-template-send", daemon=True).start()

    @property
    def serving(self) -> bool:
        """True while new workers should be asked of it: it runs, and answers."""
        return not self.gone and self.process.poll() is None and not self.stuck()

    @property
    def starting(self) -> bool:
        """True while some worker asked for is not forked yet."""
        with self._lock:
            return bool(self._waiting)

    def stuck(self, asked: Optional[float] = None) -> bool:
        """True when it answered before, but nothing for ``_ANSWER_SECONDS`` while a request (asked
        at ``asked``; by default the oldest waiting) waits: it stopped answering (SIGSTOP, say).
        One still importing (it never answered) is given the cluster's start timeout instead."""
        answered = self._answered
        if answered is None:
            return False
        if asked is None:
            with self._lock:
                asked = min((process._asked for process in self._waiting.values()), default=None)
            if asked is None:
                return False
        return time.monotonic() - max(asked, answered) > _ANSWER_SECONDS

    def overdue(self) -> bool:
        """Called for a child seen ended that it has not reported: True once it has reported
        nothing for ``_REPORT_SECONDS`` since the first such child was seen (so that stopping many
        workers of a template that does not report waits that long once, not once each)."""
        now = time.monotonic()
        if self._unreported_since is None:
            self._unreported_since = now
        return now - self._unreported_since > _REPORT_SECONDS

    def spawn(self, args: Sequence[str], env: dict, ready_write: int) -> ForkedProcess:
        """Ask for a worker run with ``args`` in ``env`` that reports on ``ready_write`` (which the
        template gets a copy of: the caller closes its own). Returns at once."""
        stdin_read, stdin_write = os.pipe()
        process = ForkedProcess(self, os.fdopen(stdin_write, "wb"))
        with self._lock:
            self._requests += 1
            request = self._requests
            self._waiting[request] = process
        changes = {"set": {key: value for key, value in env.items() if self._env.get(key) != value},
                   "unset": [key for key in self._env if key not in env]}
        message = json.dumps({"id": request, "args": list(args), "env": changes}).encode()
        if len(message) > MESSAGE_BYTES:   # (the template reads no more: the worker starts afresh)
            os.close(stdin_read)
            with self._lock:
                self._waiting.pop(request, None)
            process._forked(None, "could not be asked of its template (the environment changed too much)")
            return process
        self._outbox.put((request, message, stdin_read, os.dup(ready_write)))
        return process

    def _send_requests(self) -> None:
        while True:
            request, message, *fds = self._outbox.get()
            if request is None:
                return
            try:
                if not self.gone:
                    socket.send_fds(self._control, [message], fds)
            except OSError:   # gone (the reader settles what was not answered), or too large
                with self._lock:
                    process = self._waiting.pop(request, None)
                if process is not None:
                    process._forked(None, "could not be asked of its template")   # started afresh
            finally:
                for fd in fds:
                    os.close(fd)

    def _read_answers(self) -> None:
        while True:
            try:
                message = self._control.recv(MESSAGE_BYTES)
            except OSError:
                message = b""
            if not message:
                break
            answer = json.loads(message)
            self._answered = time.monotonic()
            with self._lock:
                if "exited" in answer:
                    child = self._children.pop(answer["exited"], None)
                else:
                    child = self._waiting.pop(answer["id"], None)
                    if child is not None and answer.get("pid"):
                        self._children[answer["pid"]] = child
            if child is not None:
                if "exited" in answer:
                    child._ended(answer["returncode"])
                else:
                    child._forked(answer.get("pid"))
            # (After settling: a wait that saw this child end meanwhile may have set it.)
            self._unreported_since = None
        try:
            self.process.wait(5.0)   # (it closed its end: it is exiting)
        except subprocess.TimeoutExpired:
            pass
        with self._lock:
            self.gone = True
            waiting, self._waiting = list(self._waiting.values()), {}
            children = list(self._children.values())
        for process in waiting + children:   # their waits settle them (see ForkedProcess._unreported)
            with process._settled:
                process._settled.notify_all()

    def let_go(self) -> None:
        """(In a forked child of the program.) Close this process's copies of what ties the template
        and its workers to the program; the parent keeps its own."""
        # No lock: this child has one thread, and a lock another thread of the parent held at the
        # fork stays held here for good.
        for process in [*self._waiting.values(), *self._children.values()]:
            try:
                process.stdin.close()
            except OSError:
                pass
        self._control.close()

    def close(self, grace: float = 2.0) -> None:
        """End the template (the caller stops its workers first; an orphan exits when it sees its
        parent change). It is killed: it ran no user code and holds nothing to flush, and
        finalising its modules would only delay the caller's exit."""
        self._outbox.put((None, b""))
        try:
            self._control.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.process.poll() is None:
            self.process.kill()   # (SIGKILL: a stopped template would not take SIGTERM until resumed)
        self.process.wait()
        self._reader.join(grace)
        self._control.close()
