"""Payloads past gRPC's 4 MiB default and protobuf's 2 GiB message limit cross the wire."""
from __future__ import annotations

import hashlib
import os

import pytest
from conftest import distributed_on

from turbolift import on
from turbolift._wire.protocol import FRAME_DATA


def digest_of(data):
    return len(data), hashlib.sha256(data).hexdigest()


def echo(data):
    return data


def filled(size, byte):
    return bytes([byte]) * size


def length_and_tail(data):
    return len(data), bytes(data[-8:])


def peak_rss(pid):
    """The peak resident bytes of ``pid`` since its peak was last reset."""
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM"))


def reset_peak(pid):
    """Start measuring the peak of ``pid`` afresh (Linux: 5 > /proc/PID/clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")
    return peak_rss(pid)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with distributed_on(1, tmp_path_factory.mktemp("cache")) as queue:
        yield queue


@pytest.mark.parametrize("size", [FRAME_DATA - 100, FRAME_DATA + 1, 64 * 1024 * 1024 + 3])
def test_payloads_around_and_above_the_inline_limit_round_trip(cluster, size):
    data = os.urandom(size)
    assert on(cluster)(echo)(data) == data
    assert on(cluster)(echo).submit(data).result(timeout=120) == data
    assert on(cluster)(digest_of)(data) == digest_of(data)


@pytest.mark.timeout(600)
def test_more_than_two_gib_each_way_with_bounded_memory(cluster):
    """Past protobuf's and gRPC's 2 GiB message limit, each way, holding no more than the value and
    its serialised form on each side (the throughput figures are the benchmark's, not this test's)."""
    size = 2**31 + 10
    processes = [os.getpid(), *cluster.pids()]
    data = b"\x05" * size
    before = {pid: reset_peak(pid) for pid in processes}
    assert on(cluster)(length_and_tail)(data) == (size, b"\x05" * 8)
    sending = {pid: peak_rss(pid) - before[pid] for pid in processes}
    del data
    before = {pid: reset_peak(pid) for pid in processes}
    result = on(cluster)(filled)(size, 7)
    assert len(result) == size and result[:1] == result[-1:] == b"\x07"
    receiving = {pid: peak_rss(pid) - before[pid] for pid in processes}
    del result
    # Beyond what it held before: the caller's serialised copy of the argument, the worker's received
    # buffer and its value; then the worker's result and its serialised form, the caller's received
    # buffer and the value. 2.6x leaves room for chunks in flight, never for a third copy.
    for pid in processes:
        assert sending[pid] < 2.6 * size, f"process {pid} grew {sending[pid] / size:.2f}x the payload sending"
        assert receiving[pid] < 2.6 * size, f"process {pid} grew {receiving[pid] / size:.2f}x receiving"
