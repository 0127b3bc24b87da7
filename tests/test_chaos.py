"""Chaos: many callers, random deadlines, workers killed and stopped at random, tokenless garbage alongside.

Bounded in count and in time. Afterwards every call has been answered
exactly once, with its right value or a clear error (TimeoutError or
WorkerLost), every worker serves again, and memory is back near where it
started. The figures it prints are the ones the README's Faults section
quotes (``pytest tests/test_chaos.py -s``).
"""
from __future__ import annotations

import gc
import itertools
import os
import random
import signal
import threading
import time
from collections import Counter

import grpc
import pytest

from turbolift import LocalQueue, WorkerLost, on
from turbolift._enabling import switch
from turbolift._runtime import disable
from turbolift._wire.auth import SESSION_METHOD
from turbolift.v1 import worker_pb2 as pb

FAULT_SECONDS = 30.0      # how long workers are killed and stopped
MAX_CALLS = 4000          # calls made by all callers together, at most
CALLERS = 8
STOP_SECONDS = 12.0       # a stopped worker is resumed after this long (silence is noticed after 10 s)
BIG = 1 << 20             # bytes of a "big" result


def work(kind, n, seconds=0.0):
    if kind == "nap":
        time.sleep(seconds)
        return n
    if kind == "big":
        return bytes([n % 256]) * BIG
    return n + 1


def expected(kind, n):
    return n if kind == "nap" else bytes([n % 256]) * BIG if kind == "big" else n + 1


def countdown(n):
    yield from range(n, 0, -1)


def worker_pid():
    return os.getpid()


def rss(pid):
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS"))


class Tally:
    """Every call's outcome, once; what is not a value or a clear error is a defect."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes = Counter()
        self.unclear: list[str] = []
        self.callbacks = Counter()   # call number -> times its future's callback ran
        self.started = 0

    def record(self, kind, n, value=None, error=None):
        with self.lock:
            if error is None:
                if value == expected(kind, n) if kind != "gen" else value == list(range(n, 0, -1)):
                    self.outcomes["value"] += 1
                else:
                    self.unclear.append(f"{kind}({n}) gave a wrong value {str(value)[:80]}")
            elif isinstance(error, TimeoutError):
                self.outcomes["timeout"] += 1
            elif isinstance(error, WorkerLost):
                self.outcomes["lost"] += 1
            else:
                self.unclear.append(f"{kind}({n}): {type(error).__name__}: {error}")


def caller(tally, stop, numbers, futures, rng):
    f = on()(work)
    gen = on()(countdown)
    while not stop.is_set():
        n = next(numbers)
        if n >= MAX_CALLS:
            return
        with tally.lock:
            tally.started += 1
        kind = rng.choice(["add", "add", "nap", "big", "gen"])
        timeout = rng.choice([None, 0.05, 0.3, 1.0, 3.0])
        nap = rng.choice([0.0, 0.01, 0.2, 0.6])
        try:
            if kind == "gen":
                tally.record(kind, n % 50, list(gen.options(timeout=timeout)(n % 50)))
            elif rng.random() < 0.5:
                tally.record(kind, n, f.options(timeout=timeout)(kind, n, nap))
            else:
                future = f.options(timeout=timeout).submit(kind, n, nap)

                def settled(done, kind=kind, n=n):
                    with tally.lock:
                        tally.callbacks[n] += 1
                    exc = done.exception()
                    tally.record(kind, n, None if exc else done.result(), exc)

                future.add_done_callback(settled)
                futures.append((n, future))
        except BaseException as exc:   # noqa: BLE001  (every outcome is tallied, unclear ones too)
            tally.record(kind, n % 50 if kind == "gen" else n, error=exc)


def faults(queue, stop, rng, injected):
    stopped = []
    try:
        while not stop.wait(rng.uniform(1.0, 2.5)):
            pids = queue.pids()
            if not pids:
                continue
            victim = rng.choice(pids)
            try:
                if rng.random() < 0.5:
                    os.kill(victim, signal.SIGKILL)
                    injected["SIGKILL"] += 1
                else:
                    os.kill(victim, signal.SIGSTOP)
                    injected["SIGSTOP"] += 1
                    stopped.append((time.monotonic() + STOP_SECONDS, victim))
            except ProcessLookupError:   # killed a moment ago, not yet replaced: no fault this time
                pass
            for resume_at, pid in list(stopped):
                if time.monotonic() >= resume_at:
                    _continue(pid)
                    stopped.remove((resume_at, pid))
    finally:
        for _, pid in stopped:
            _continue(pid)


def _continue(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def garbage(addresses, stop, rng, sent):
    """Tokenless traffic: random bytes on a Session, a Hello then a made-up proof, health checks."""
    while not stop.wait(0.05):
        address = rng.choice(addresses)
        with grpc.insecure_channel(address) as channel:
            session = channel.stream_stream(SESSION_METHOD)
            hello = pb.ClientFrame(hello=pb.Hello(nonce=os.urandom(32), version=1)).SerializeToString()
            proof = pb.ClientFrame(proof=pb.Proof(proof=os.urandom(32))).SerializeToString()
            bodies = rng.choice([[os.urandom(rng.randint(0, 4096))], [hello, proof, os.urandom(64)], [hello]])
            try:
                for _ in session(iter(bodies), timeout=1.0):
                    pass
            except grpc.RpcError:
                pass
            sent["messages"] += len(bodies)


@pytest.mark.timeout(600)
def test_chaos_every_call_answered_once_no_worker_wedged_memory_back(tmp_path):
    seed = int(os.environ.get("TURBOLIFT_CHAOS_SEED", "0")) or random.randrange(1, 2**32)
    print(f"\nchaos: seed {seed} (TURBOLIFT_CHAOS_SEED={seed} repeats this run's choices)")
    rng = random.Random(seed)
    queue = LocalQueue(workers=3, cache_dir=str(tmp_path / "cache"), transport="tcp")
    switch.enable(queue)
    try:
        on()(work)("add", 0)      # up, bundles built: the baseline is taken warm
        gc.collect()
        caller_before = rss(os.getpid())
        addresses = queue.wait_ready(60)

        tally, stop = Tally(), threading.Event()
        numbers = itertools.count()   # (next() on it is atomic)
        futures: list = []
        injected, sent = Counter(), Counter()
        seeded = [random.Random(rng.random()) for _ in range(CALLERS + 2)]
        threads = [threading.Thread(target=caller, args=(tally, stop, numbers, futures, seeded[i]))
                   for i in range(CALLERS)]
        threads.append(threading.Thread(target=faults, args=(queue, stop, seeded[-2], injected)))
        threads.append(threading.Thread(target=garbage, args=(addresses, stop, seeded[-1], sent)))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        stop.wait(FAULT_SECONDS)
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads), "a caller never got its answer"
        for _, future in futures:
            future.exception(timeout=300)   # (raises TimeoutError if it never settles)
        time.sleep(0.5)   # callbacks run just after a future settles
        elapsed = time.monotonic() - started

        calls = sum(tally.outcomes.values()) + len(tally.unclear)
        print(f"\nchaos: {calls} calls from {CALLERS} callers in {elapsed:.0f} s; "
              f"faults: {dict(injected)}; tokenless garbage messages: {sent['messages']}; "
              f"outcomes: {dict(tally.outcomes)}; unclear: {len(tally.unclear)}")
        assert tally.unclear == [], tally.unclear[:10]
        assert all(tally.callbacks[n] == 1 for n, _ in futures), "a callback ran more or less than once"
        assert calls == tally.started, f"{tally.started - calls} calls were never answered"
        assert tally.outcomes["value"] > calls // 4, f"too few calls succeeded: {dict(tally.outcomes)}"
        assert sum(injected.values()) >= 5 and sent["messages"] >= 50

        # Every worker serves again: sequential calls spread over all of them (ties go in turn).
        pid_of = on(timeout=60)(worker_pid)
        deadline = time.monotonic() + 120
        while True:
            try:   # (a worker killed just before the faults stopped may still be being replaced)
                seen = {pid_of() for _ in range(12)}
            except WorkerLost:
                seen = set()
            if seen == set(queue.pids()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert seen == set(queue.pids()), f"workers {set(queue.pids()) - seen} no longer serve"
        for pid in queue.pids():
            assert rss(pid) < 512 * 1024 * 1024, f"worker {pid} holds {rss(pid) / 2**20:.0f} MiB"
        futures.clear()
        gc.collect()
        # The caller reuses freed payload buffers and hands free memory back to the system within
        # allocator.TRIM_INTERVAL (0.5 s): give it a generous, bounded while on a busy machine.
        freed_by = time.monotonic() + 10
        time.sleep(1.0)
        while True:
            grown = rss(os.getpid()) - caller_before
            if grown < 256 * 1024 * 1024 or time.monotonic() > freed_by:
                break
            time.sleep(0.25)
        assert grown < 256 * 1024 * 1024, f"the caller kept {grown / 2**20:.0f} MiB"
        workers = sorted(rss(pid) >> 20 for pid in queue.pids())
        print(f"chaos: caller memory {grown / 2**20:+.0f} MiB; workers {workers} MiB")
    finally:
        disable()
        for pid in queue.pids():
            _continue(pid)
