"""Frames with bulk bytes, encoded and decoded by hand (turbolift._wire.bulk), read as protobuf reads them.

No server here: these check the encoding itself, byte for byte against
protobuf in both directions, and that whatever the decoder does not
expect is protobuf's to parse or refuse. The streams that carry such
frames are exercised by the payload, stream and nested-call tests.
"""
from __future__ import annotations

import os
import random

import pytest
from google.protobuf.message import DecodeError

from turbolift._wire import bulk
from turbolift._wire.chunked import Pieces
from turbolift._wire.frames import client_frame, server_frame
from turbolift._wire.protocol import FRAME_DATA
from turbolift.v1 import worker_pb2 as pb

SIZES = [0, 10, bulk.BULK - 1, bulk.BULK, 1 << 20, FRAME_DATA]


def _frames(data_size: int):
    """(frame class, kind, the frame with its small fields, bulk field name) for every bulk kind."""
    return [
        (pb.ServerFrame, "reply", server_frame("reply", outcome=pb.RETURNED, elapsed_seconds=0.25,
                                               worker_id="w-1"), "result"),
        (pb.ServerFrame, "chunk", server_frame("chunk"), "data"),
        (pb.ServerFrame, "nested_call", server_frame("nested_call", id=7, function=b"fn", size=data_size,
                                                     last=True), "data"),
        (pb.ClientFrame, "invoke", _invoke(), "arguments"),
        (pb.ClientFrame, "chunk", client_frame("chunk"), "data"),
        (pb.ClientFrame, "nested_reply", client_frame("nested_reply", id=3, ok=True, last=True), "data"),
    ]


def _invoke() -> pb.ClientFrame:
    frame = pb.ClientFrame()
    frame.invoke.function.module, frame.invoke.function.qualname = "mod", "f"
    frame.invoke.call_id, frame.invoke.timeout, frame.invoke.forward_events = "1-2", 1.5, True
    frame.invoke.extra_bundles.extend(["sha256:aa", "sha256:bb"])
    return frame


@pytest.mark.parametrize("size", SIZES)
def test_encoded_frames_are_protobufs_own_encoding_and_decode_to_the_same_fields(size):
    data = os.urandom(size)
    for frame_class, kind, frame, field in _frames(size):
        expected = frame_class()
        expected.CopyFrom(frame)
        setattr(getattr(expected, kind), field, data)
        sent = bulk.serialize(bulk.encoded(frame, kind, data))
        assert frame_class.FromString(sent) == expected, (kind, size)
        received = bulk.decoded(frame_class, sent)
        assert received.WhichOneof("frame") == kind
        assert bytes(getattr(getattr(received, kind), field)) == data
        for name in getattr(expected, kind).DESCRIPTOR.fields_by_name:
            if name != field:
                assert getattr(getattr(received, kind), name) == getattr(getattr(expected, kind), name), name
        if size >= bulk.BULK:
            assert isinstance(received, bulk.BulkFrame)   # the bulk bytes were not copied out
            assert isinstance(getattr(received, kind).__getattr__(field), memoryview)


def test_a_frame_encoded_by_protobuf_decodes_alike():
    data = os.urandom(200_000)
    frame = pb.ServerFrame()
    frame.reply.outcome, frame.reply.elapsed_seconds, frame.reply.result = pb.RETURNED, 1.0, data
    received = bulk.decoded(pb.ServerFrame, frame.SerializeToString())
    assert bytes(received.reply.result) == data and received.reply.elapsed_seconds == 1.0
    assert received.reply.outcome == pb.RETURNED


def test_chunk_frames_carry_the_pieces_in_order_and_read_as_protobuf_chunks():
    parts = [os.urandom(n) for n in (3, FRAME_DATA - 1, 5, FRAME_DATA + 17, 1)]
    payload = Pieces(parts, sum(map(len, parts)))
    for frame_class in (pb.ServerFrame, pb.ClientFrame):
        frames = list(bulk.chunk_frames(frame_class, payload))
        assert all(len(frame) <= FRAME_DATA + 16 for frame in frames)
        assert b"".join(frame_class.FromString(f).chunk.data for f in frames) == b"".join(parts)
        assert b"".join(bytes(bulk.decoded(frame_class, f).chunk.data) for f in frames) == b"".join(parts)
    small = list(bulk.chunk_frames(pb.ClientFrame, b"tiny"))
    assert [pb.ClientFrame.FromString(f).chunk.data for f in small] == [b"tiny"]


@pytest.mark.parametrize("size", [10, bulk.BULK - 1, bulk.BULK, 1 << 20, FRAME_DATA])
def test_pieces_that_fit_one_frame_encode_as_their_joined_bytes_would(size):
    # A framed payload (dumps_payload(framed=True)) reaches encoded() as pieces, some of them views.
    data = os.urandom(size)
    cut = [0, size // 3, size // 3 + 1, size]
    parts = [data[a:b] if i % 2 else memoryview(data)[a:b] for i, (a, b) in enumerate(zip(cut, cut[1:]))]
    for frame_class, kind, frame, _ in _frames(size):
        joined = bulk.serialize(bulk.encoded(_copy(frame_class, frame), kind, data))
        pieces = bulk.serialize(bulk.encoded(_copy(frame_class, frame), kind, Pieces(parts, size)))
        assert pieces == joined, (kind, size)


def _copy(frame_class, frame):
    copy = frame_class()
    copy.CopyFrom(frame)
    return copy


def test_unusual_but_valid_encodings_are_left_to_protobuf():
    data = os.urandom(100_000)
    # The bulk field twice (protobuf: the last wins) and a frame of two fields (merged).
    twice = pb.Reply(result=b"first" * 20_000).SerializeToString() + pb.Reply(result=data).SerializeToString()
    raw = b"\x12" + bulk._varint(len(twice)) + twice
    assert bytes(bulk.decoded(pb.ServerFrame, raw).reply.result) == data
    two = pb.ServerFrame(chunk=pb.Chunk(data=b"x")).SerializeToString() + \
        pb.ServerFrame(chunk=pb.Chunk(data=data)).SerializeToString()
    assert bytes(bulk.decoded(pb.ServerFrame, two).chunk.data) == data


def test_garbage_and_truncated_frames_raise_protobufs_decode_error_and_nothing_else():
    rng = random.Random(1234)
    good = bulk.serialize(bulk.encoded(_invoke(), "invoke", os.urandom(bulk.BULK + 10)))
    cases = [good[:cut] for cut in (1, 2, 5, 20, len(good) // 2, len(good) - 1)]
    cases += [bytes(rng.getrandbits(8) for _ in range(bulk.BULK + rng.randrange(64))) for _ in range(30)]
    cases += [good[:3] + b"\xff" * 12 + good[15:], b"\x1a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01" * 6000]
    refused = 0
    for raw in cases:
        try:
            bulk.decoded(pb.ClientFrame, raw)
        except DecodeError:
            refused += 1
    assert refused >= len(cases) - 5   # (random bytes are now and then a valid frame)
    with pytest.raises(DecodeError):
        bulk.decoded(pb.ClientFrame, good[:-1])


def _padded(value: int, width: int) -> bytes:
    """``value`` as a varint of exactly ``width`` bytes (continuation bits on zero bytes)."""
    out = bytearray()
    for _ in range(width - 1):
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@pytest.mark.parametrize("width", [6, 8, 10])
def test_keys_and_lengths_longer_than_protobuf_allows_are_protobufs_to_refuse(width):
    data = os.urandom(bulk.BULK + 10)
    inner = pb.Chunk(data=data).SerializeToString()
    for raw in (b"\x22" + _padded(len(inner), width) + inner,                   # the frame's length
                _padded(4 << 3 | 2, width) + bulk._varint(len(inner)) + inner):  # the frame's key
        with pytest.raises(DecodeError):
            pb.ClientFrame.FromString(raw)
        with pytest.raises(DecodeError):
            bulk.decoded(pb.ClientFrame, raw)
