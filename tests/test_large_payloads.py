"""Payloads past gRPC's 4 MiB default and protobuf's 2 GiB message limit cross the wire."""
from __future__ import annotations

import hashlib
import os

import pytest
from conftest import distributed_on

from turbolift import on
from turbolift._wire.blobs import INLINE_LIMIT


def digest_of(data):
    return len(data), hashlib.sha256(data).hexdigest()


def echo(data):
    return data


def filled(size, byte):
    return bytes([byte]) * size


def length_and_tail(data):
    return len(data), bytes(data[-8:])


def peak_rss(pid):
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with distributed_on(1, tmp_path_factory.mktemp("cache")) as queue:
        yield queue


@pytest.mark.parametrize("size", [INLINE_LIMIT - 100, INLINE_LIMIT + 1, 64 * 1024 * 1024 + 3])
def test_payloads_around_and_above_the_inline_limit_round_trip(cluster, size):
    data = os.urandom(size)
    assert on(cluster)(echo)(data) == data
    assert on(cluster)(echo).submit(data).result(timeout=120) == data
    assert on(cluster)(digest_of)(data) == digest_of(data)


def test_more_than_two_gib_each_way_with_bounded_memory(cluster):
    size = 2**31 + 10  # past protobuf's and gRPC's 2 GiB message limit
    data = b"\x05" * size
    assert on(cluster)(length_and_tail)(data) == (size, b"\x05" * 8)
    del data
    result = on(cluster)(filled)(size, 7)
    assert len(result) == size and result[:1] == result[-1:] == b"\x07"
    del result
    # Caller and worker each held the payload and its serialised form, not more.
    assert peak_rss(os.getpid()) < 3 * size
    for pid in cluster.pids():
        assert peak_rss(pid) < 3 * size
