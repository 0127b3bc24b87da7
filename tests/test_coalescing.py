"""Concurrent submits of a cheap function share messages; slow functions never wait."""
from __future__ import annotations

import time

import grpc

from turbolift import on
from turbolift._wire import auth as _auth
from turbolift.v1 import worker_pb2 as pb
from turbolift.v1 import worker_pb2_grpc as pb_grpc


def scale(x, factor=1):
    if x < 0:
        raise ValueError(f"negative {x}")
    return x * factor


def nap(seconds):
    time.sleep(seconds)
    return seconds


def _messages_served(cluster) -> int:
    """RPCs the workers have run (a coalesced batch counts once)."""
    total = 0
    for address in cluster.wait_ready(10):
        with grpc.insecure_channel(address) as channel:
            reply = pb_grpc.WorkerStub(channel).Describe(pb.DescribeRequest(), timeout=10,
                                                         metadata=_auth.metadata_for(cluster.token))
        total += reply.calls_served
    return total


def test_many_cheap_submits_travel_in_fewer_messages_each_with_its_own_result(cluster):
    f = on(cluster)(scale)
    f(1)  # the workers report how long a call takes: cheap
    before = _messages_served(cluster)
    inputs = list(range(-20, 2000))
    futures = [f.submit(x, factor=3) for x in inputs]
    for x, future in zip(inputs, futures):
        if x < 0:
            assert isinstance(future.exception(timeout=60), ValueError)
            assert str(future.exception()) == f"negative {x}"
        else:
            assert future.result(timeout=60) == 3 * x
    messages = _messages_served(cluster) - before
    assert messages < len(inputs) / 4, f"{len(inputs)} calls took {messages} messages"


def test_slow_calls_are_never_held_back_to_be_coalesced(cluster):
    f = on(cluster)(nap)
    f(0.01)
    before = _messages_served(cluster)
    futures = [f.submit(0.05) for _ in range(40)]
    assert [fut.result(timeout=60) for fut in futures] == [0.05] * 40
    assert _messages_served(cluster) - before == 40  # one message per call: none waited


def test_a_cheap_function_that_turns_slow_is_no_longer_coalesced_after_a_few_calls(cluster):
    f = on(cluster)(nap)
    for _ in range(3):   # thousands of cheap calls, most of them coalesced into large batches
        assert [fut.result(timeout=60) for fut in [f.submit(0) for _ in range(2000)]] == [0] * 2000
    for _ in range(4):   # the function became slow: the workers report it
        assert f.submit(0.05).result(timeout=60) == 0.05
    before = _messages_served(cluster)
    futures = [f.submit(0.05) for _ in range(40)]
    assert [fut.result(timeout=60) for fut in futures] == [0.05] * 40
    assert _messages_served(cluster) - before == 40  # one message per call: none waited


def test_a_waiting_call_can_be_cancelled(cluster):
    f = on(cluster)(scale)
    f(1)
    futures = [f.submit(x) for x in range(500)]
    cancelled = [fut for fut in futures if fut.cancel()]
    assert cancelled, "nothing was still waiting to be cancelled"
    for fut in futures:
        if fut in cancelled:
            assert fut.cancelled()
        else:
            assert fut.result(timeout=60) == futures.index(fut)
