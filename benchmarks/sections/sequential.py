"""1. Sequential call overhead.

One call at a time, each timed on its own with ``perf_counter``:

* ``turbolift_noop`` / ``turbolift_add``: ``noop()`` and ``add(1, 2)`` marked
  with ``turbolift.on`` and sent to the local cluster (one exchange each on
  a persistent ``/turbolift.v1.Worker/Session`` stream);
* ``raw_echo_noop`` / ``raw_echo_add``: a bare grpcio unary echo of the very
  bytes turbolift puts in its request for those calls
  (``turbolift._wire.serialize.dumps((args, kwargs), for_worker=True)``),
  pre-serialised once: the limit of the transport;
* ``dill_echo_noop`` / ``dill_echo_add``: the same bytes to a handler that
  unpickles them, runs the function and pickles the result: the least
  work any worker must do;
* ``worker_direct_noop`` / ``worker_direct_add``: the complete ``Invoke``
  frame turbolift would send, serialised once, sent with bare grpcio on a
  Session (handshake done once) straight to the turbolift workers, the
  reply frame left unparsed: the worker's share of the overhead, so that
  turbolift - worker_direct is the caller's share;
* the transport's forms, each one round trip of ``add(1, 2)``'s request
  bytes over the same kind of socket (unix, as turbolift's local workers),
  rotating over as many server processes (:mod:`benchmarks.socket_echo`,
  :mod:`benchmarks.transport_forms`):
  ``socket_pingpong_add``: bare socket ping-pong, the physical limit;
  ``raw_echo_add`` above: grpcio sync unary;
  ``stream_echo_add``: grpcio sync bidirectional stream, one message out
  and one back on a long-lived stream; ``thread_stream_echo_add``: that
  stream driven by the calling thread alone (no hand-off to gRPC's
  threads, :class:`~benchmarks.transport_forms.ThreadStreams`);
  ``aio_stream_echo_add`` and
  ``aio_unary_echo_add``: the same two from a ``grpc.aio`` channel;
* ``local_add``: ``add(1, 2)`` called directly, and ``local_marked_add``:
  through the marker with distribution off (``timeit`` blocks, since one
  call is far below the clock's resolution; each sample is a block mean).

The remote variants and their baselines alternate in rounds (rotating the
order) so that changes in machine load hit all of them alike. Warm-up
rounds are discarded.
"""
from __future__ import annotations

import itertools
import timeit
from typing import Callable

from turbolift._wire import serialize as _serialize

from .. import workloads
from ..baseline_server import MESSAGE_OPTIONS
from ..measure import Budget, interleave, summarise
from ..socket_echo import SocketEchoServers
from ..transport_forms import AioForms, SyncStreams, ThreadStreams, runner

TITLE = "Sequential call overhead"


def run(ctx) -> dict:
    mode = ctx.mode
    baseline = ctx.contenders.baseline
    noop_bytes = _serialize.dumps(((), {}), for_worker=True)
    add_bytes = _serialize.dumps(((1, 2), {}), for_worker=True)
    if baseline.caller("Echo", add_bytes)() != add_bytes:
        raise RuntimeError("the baseline echo did not return the bytes it was sent")
    if _serialize.loads(baseline.caller("Call_add", add_bytes)()) != 3:
        raise RuntimeError("the baseline dill-echo did not compute add(1, 2)")

    samples = _time_remote(ctx, noop_bytes, add_bytes)
    figures = {name: summarise(values, "s") for name, values in samples.items()}

    for name, fn in (("local_add", workloads.add), ("local_marked_add", ctx.contenders.local_marked.add)):
        timer = timeit.Timer("add(1, 2)", globals={"add": fn})
        timer.timeit(mode.local_block_calls)  # warm-up
        blocks = timer.repeat(repeat=mode.local_blocks, number=mode.local_block_calls)
        figure = summarise([block / mode.local_block_calls for block in blocks], "s")
        figure["note"] = f"each sample is the mean of a block of {mode.local_block_calls} calls"
        figures[name] = figure

    ctx.log("sequential: " + ", ".join(
        f"{name} {fig['median'] * 1e3:.3f} ms" for name, fig in figures.items() if "local" not in name))
    return {
        "figures": figures,
        "params": {"rounds": mode.seq_rounds, "per_round": mode.seq_per_round,
                   "request_bytes_noop": len(noop_bytes), "request_bytes_add": len(add_bytes),
                   "servers": mode.workers},
        "notes": ["raw echo and dill-echo requests are serialised once, before timing; "
                  "turbolift serialises its arguments on every call, as it must",
                  f"transport forms: {baseline.transport} sockets, {mode.workers} server processes each; "
                  "socket ping-pong has no framing (the client reads back as many bytes as it sent); "
                  "aio calls are timed inside a private event loop, one await each"],
    }


FORMS = ("socket_pingpong_add", "stream_echo_add", "thread_stream_echo_add", "aio_stream_echo_add",
         "aio_unary_echo_add")


def _time_remote(ctx, noop_bytes: bytes, add_bytes: bytes) -> dict:
    """Per-call samples of every remote variant and transport form, interleaved in rounds."""
    mode = ctx.mode
    remote = ctx.contenders.remote
    baseline = ctx.contenders.baseline
    closing: list = []   # closed in reverse order after timing (each stream before its channel)
    try:
        pingpong = SocketEchoServers(mode.workers, transport=baseline.transport)
        closing.append(pingpong)
        aio = AioForms(baseline.addresses)
        closing.append(aio)
        streams = SyncStreams(baseline.channels)
        closing.append(streams)
        thread_streams = ThreadStreams(baseline.channels)
        closing.append(thread_streams)
        variants = {
            "turbolift_noop": remote.noop,
            "turbolift_add": lambda: remote.add(1, 2),
            "worker_direct_noop": _worker_direct(ctx, "noop", noop_bytes, closing),
            "worker_direct_add": _worker_direct(ctx, "add", add_bytes, closing),
            "raw_echo_noop": baseline.caller("Echo", noop_bytes),
            "raw_echo_add": baseline.caller("Echo", add_bytes),
            "dill_echo_noop": baseline.caller("Call_noop", noop_bytes),
            "dill_echo_add": baseline.caller("Call_add", add_bytes),
            "socket_pingpong_add": pingpong.caller(add_bytes),
            "stream_echo_add": streams.caller(add_bytes),
            "thread_stream_echo_add": thread_streams.caller(add_bytes),
            "aio_stream_echo_add": aio.stream(add_bytes),
            "aio_unary_echo_add": aio.unary(add_bytes),
        }
        for name in FORMS:
            if variants[name]() != add_bytes:
                raise RuntimeError(f"{name} did not return the bytes it was sent")
        interleave(variants, rounds=2, per_round=20, budget=Budget(mode.seq_budget), runner=runner)  # warm-up
        return interleave(variants, mode.seq_rounds, mode.seq_per_round, Budget(mode.seq_budget),
                          runner=runner)
    finally:
        for item in reversed(closing):
            item.close()


class _DirectSession:
    """One Session to a turbolift worker spoken with bare grpcio: handshake once, then pre-serialised
    Invoke frames out and the Reply frames' bytes back, unparsed."""

    def __init__(self, channel, address: str, token) -> None:
        import queue as _queue

        from turbolift._wire import handshake
        from turbolift._wire.auth import SESSION_METHOD
        from turbolift._wire.protocol import SESSION_VERSION
        from turbolift.v1 import worker_pb2 as pb

        self._outbox: _queue.SimpleQueue = _queue.SimpleQueue()
        method = channel.stream_stream(SESSION_METHOD)   # bytes in, bytes out
        self._replies = method(iter(self._outbox.get, None), timeout=3600)
        mine = handshake.nonce()
        hello = pb.ClientFrame(hello=pb.Hello(nonce=mine, version=SESSION_VERSION))
        self._outbox.put(hello.SerializeToString())
        challenge = pb.ServerFrame.FromString(next(self._replies)).challenge
        expected = handshake.worker_proof(token, mine, challenge.nonce)
        if token and not handshake.verify(expected, challenge.proof):
            raise RuntimeError(f"worker {address} did not prove it holds the token")
        proof = handshake.caller_proof(token, mine, challenge.nonce)
        self._outbox.put(pb.ClientFrame(proof=pb.Proof(proof=proof)).SerializeToString())

    def call(self, invoke: bytes) -> bytes:
        self._outbox.put(invoke)
        return next(self._replies)

    def close(self) -> None:
        self._outbox.put(None)


def _worker_direct(ctx, name: str, arguments: bytes, channels: list) -> Callable[[], bytes]:
    """A call of ``name`` as bare grpcio bytes on a Session straight to the turbolift workers, rotating."""
    import grpc

    from turbolift._caller import bundling as _bundle
    from turbolift._wire.auth import discovered_token
    from turbolift.v1 import worker_pb2 as pb

    queue = ctx.contenders.queue
    target = _bundle.target_for(getattr(ctx.contenders.remote, name))
    ref = pb.FunctionRef(bundle_id=target.bundle.id, module=target.module, qualname=target.qualname)
    invoke = pb.ClientFrame(invoke=pb.Invoke(function=ref, arguments=arguments, call_id="benchmark"))
    request = invoke.SerializeToString()
    sessions = []
    for address in queue.wait_ready(30):
        channel = grpc.insecure_channel(address, options=MESSAGE_OPTIONS)
        channels.append(channel)
        session = _DirectSession(channel, address, queue.token or discovered_token(address))
        reply = pb.ServerFrame.FromString(session.call(request)).reply
        if reply.outcome != pb.RETURNED:
            raise RuntimeError(f"worker {address} answered {pb.Outcome.Name(reply.outcome)} to a direct call")
        sessions.append(session)
        channels.append(session)  # closed (its stream ended) before the channels
    turn = itertools.cycle(sessions)

    def direct() -> bytes:
        return next(turn).call(request)
    return direct
