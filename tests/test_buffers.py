"""numpy arrays and other large buffers travel out of band (pickle protocol 5), through a real worker.

What must hold: they come back equal, of the same dtype, shape, memory
order and writability as they left (as an in-process call would hand
them over); the sender does not copy them into the payload; a payload
whose buffer table lies is refused with an error, not a crash.
"""
from __future__ import annotations

import hashlib
import pickle

import pytest
from conftest import distributed_on

from turbolift import on
from turbolift._wire import buffers, bulk, serialize
from turbolift._wire.chunked import Pieces, frames_of, gather
from turbolift._wire.protocol import FRAME_DATA
from turbolift.v1 import worker_pb2 as pb

np = pytest.importorskip("numpy")


def slow_sum(array, seconds):
    import time
    time.sleep(seconds)
    return float(array.sum())


def describe(array):
    """What a worker sees of an array: its properties and a checksum of its values."""
    return (str(array.dtype), array.shape, bool(array.flags.c_contiguous), bool(array.flags.f_contiguous),
            bool(array.flags.writeable), hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest())


def doubled(array):
    out = array * 2
    out[..., 0] = -1             # the result is the worker's own, writable array
    return out


def bump_in_place(array):
    array[0] += 1                # a writable argument is writable on the worker too
    return array


def read_only_copy(array):
    out = array.copy()
    out.flags.writeable = False
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with distributed_on(1, tmp_path_factory.mktemp("cache")) as queue:
        yield queue


ARRAYS = {
    "inline 1 MB float64": lambda: np.arange(131_072, dtype=np.float64),
    "chunked 24 MB int32 2-d": lambda: np.arange(6_000_000, dtype=np.int32).reshape(3_000, 2_000),
    "fortran order": lambda: np.asfortranarray(np.arange(400_000, dtype=np.float32).reshape(800, 500)),
    "structured dtype": lambda: np.zeros(100_000, dtype=[("x", "f8"), ("n", "i4")]),
    "not contiguous (in band)": lambda: np.arange(2_000_000, dtype=np.float64)[::3],
    "small (in band)": lambda: np.arange(10),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_arrays_arrive_and_return_as_they_were(cluster, name):
    array = ARRAYS[name]()
    # As the copy pickle makes (a strided view arrives contiguous, as pickle.loads gives it locally).
    assert on(cluster)(describe)(array) == describe(pickle.loads(pickle.dumps(array, protocol=5)))
    if array.flags.c_contiguous or array.flags.f_contiguous:
        assert on(cluster)(describe)(array) == describe(array)
    if array.dtype.names:
        return   # (nothing to double in a record)
    back = on(cluster)(doubled)(array)
    expected = doubled(array)
    assert back.dtype == expected.dtype and back.shape == expected.shape
    assert np.array_equal(back, expected) and back.flags.writeable


def test_writability_travels_both_ways(cluster):
    array = np.arange(200_000, dtype=np.float64)
    assert on(cluster)(bump_in_place)(array)[0] == 1 and array[0] == 0   # (a copy: listed as inherent)
    frozen = array.copy()
    frozen.flags.writeable = False
    assert on(cluster)(describe)(frozen)[4] is False
    assert on(cluster)(read_only_copy)(array).flags.writeable is False


def test_bytearrays_and_arrays_inside_structures(cluster):
    value = {"raw": bytearray(range(256)) * 1_000, "arrays": [np.ones(70_000), np.zeros((300, 300))]}
    back = on(cluster)(lambda v: v)(value)
    assert type(back["raw"]) is bytearray and back["raw"] == value["raw"]
    assert all(np.array_equal(a, b) for a, b in zip(back["arrays"], value["arrays"]))


def test_the_payload_refers_to_the_arrays_memory_instead_of_copying_it():
    array = np.zeros(FRAME_DATA // 4, dtype=np.float64)      # 8 MiB: chunked
    payload = serialize.dumps_payload((array,), for_worker=True)
    assert isinstance(payload, Pieces) and buffers.has_buffers(payload.parts[0])
    array[-1] = 42.0   # changed after serialising: the payload sees it, so it holds no copy
    (back,) = serialize.loads(gather(len(payload), frames_of(payload)))
    assert back[-1] == 42.0
    in_band = len(pickle.dumps(array, protocol=5))
    assert len(payload) < in_band + 200   # the same bytes, once


def test_a_buffer_sent_with_a_call_stays_exported_until_the_call_ends(cluster):
    # The README's inherent difference: the memory is read as it is sent, not copied first.
    raw = bytearray(8 * 131_072)                        # 1 MiB behind an array: inline, out of band
    array = np.frombuffer(raw, dtype=np.float64)
    future = on(cluster)(slow_sum).submit(array, 5.0)   # (wide margin: the call is in flight 5 s)
    with pytest.raises(BufferError):
        raw.extend(b"x")
    assert future.result(timeout=60) == 0.0
    del array
    raw.extend(b"x")   # the call ended (and the array is gone): the buffer may change size again


def test_a_framed_payload_that_fits_one_frame_still_refers_to_the_arrays_memory():
    # What a call's arguments and a worker's result are: pieces until their frame is encoded.
    array = np.zeros(131_072, dtype=np.float64)              # 1 MiB: inline in its frame
    assert type(serialize.dumps_payload((array,), for_worker=True)) is bytes   # (unframed: joined)
    payload = serialize.dumps_payload((array,), for_worker=True, framed=True)
    assert isinstance(payload, Pieces) and len(payload) <= FRAME_DATA
    array[-1] = 42.0   # changed after serialising: the payload sees it, so it holds no copy
    frame = pb.ClientFrame()
    frame.invoke.function.module = "m"
    received = bulk.decoded(pb.ClientFrame, bulk.serialize(bulk.encoded(frame, "invoke", payload)))
    (back,) = serialize.loads(received.invoke.arguments)
    assert back[-1] == 42.0 and back.shape == array.shape


@pytest.mark.parametrize("damage", ["truncated buffer", "count too large", "table cut short",
                                    "size too large"])
def test_a_payload_with_a_lying_buffer_table_is_refused(damage):
    data = serialize.dumps(np.ones(100_000), for_worker=False)
    count_at = len(buffers.MAGIC)
    if damage == "truncated buffer":
        bad = data[:len(data) // 2]
    elif damage == "count too large":
        bad = data[:count_at] + (2**31).to_bytes(4, "little") + data[count_at + 4:]
    elif damage == "size too large":   # refused before a buffer of that size is allocated
        bad = data[:count_at + 4] + (2**62).to_bytes(8, "little") + data[count_at + 12:]
    else:
        bad = data[:count_at + 6]
    with pytest.raises((ValueError, pickle.UnpicklingError, EOFError)) as refused:
        serialize.loads(bad)
    if damage == "size too large":
        assert "declared" in str(refused.value)
    with pytest.raises((ValueError, pickle.UnpicklingError, EOFError)):
        serialize.loads(Pieces([bad[:FRAME_DATA], bad[FRAME_DATA:]] if len(bad) > FRAME_DATA else [bad],
                               len(bad)))


def refills(count, size):
    """A generator that reuses one buffer for every item (as readers into a buffer do)."""
    buffer = np.zeros(size // 8, dtype=np.int64)
    for n in range(count):
        buffer[:] = n
        yield buffer


def first_and_last(array):
    return int(array[0]), int(array[-1])


@pytest.mark.parametrize("size", [512 * 1024, 8 * 1024 * 1024])
def test_items_of_a_generator_that_reuses_its_buffer_arrive_as_they_were_yielded(cluster, size):
    """Items are read as they are sent; the worker's generator runs again before an item leaves, so
    an item that refers to a reused buffer is copied first (arrays over 4 MiB travel as pieces)."""
    remote = [int(item[0]) for item in on(cluster)(refills)(6, size)]
    assert remote == [int(item[0]) for item in refills(6, size)] == list(range(6))


def test_map_inputs_from_a_generator_that_reuses_its_buffer_arrive_as_they_were_yielded(cluster):
    results = list(on(cluster)(first_and_last).map(refills(6, 8 * 1024 * 1024), chunksize=1))
    assert results == [(n, n) for n in range(6)]
