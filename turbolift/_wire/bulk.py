"""Session frames that carry bulk bytes, encoded and decoded without protobuf's copies.

A 1 MiB result sent the plain way is copied six times besides the
transport's own copies: joined from the pickler's pieces, set into the
Reply, serialised; on the other side parsed into upb's arena, read out as
``bytes`` and unpickled. Here a frame whose bytes field is large is written
as protobuf's wire format directly: the sub-message's small fields are
serialised by protobuf, and the bulk field is appended as its tag, its
length and the pieces themselves, joined once into the message gRPC sends.
On receipt the bulk field is taken as a ``memoryview`` of the received
message, the small fields are parsed by protobuf.

The encoding is protobuf's own (a field may follow the others; fields are
read in any order), so a receiver that parses with protobuf reads the same
message; tests check both directions against protobuf. Anything the
decoder does not expect is handed to protobuf whole, which parses it or
raises ``DecodeError`` as for any malformed frame.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Union

from google.protobuf.message import Message

from ..v1 import worker_pb2 as pb
from .chunked import Pieces, frames_of
from .protocol import FRAME_DATA

BULK = 64 * 1024      # below this protobuf's own path costs as little

_LEN = 2               # wire type of length-delimited fields
# Which field of which frame kind holds bulk bytes.
_BULK_FIELDS = {
    pb.ServerFrame: {"reply": "result", "chunk": "data", "nested_call": "data"},
    pb.ClientFrame: {"invoke": "arguments", "chunk": "data", "nested_reply": "data"},
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int) -> bytes:
    return _varint(number << 3 | _LEN)


def _number(cls: type, field: str) -> int:
    return cls.DESCRIPTOR.fields_by_name[field].number


# (frame class, kind) -> (number of the kind in the frame, number of the bulk field, sub-message class)
_LAYOUT: dict = {}
# (frame class, number of the kind) -> kind
_KINDS: dict = {}
for _frame, _fields in _BULK_FIELDS.items():
    for _kind, _field in _fields.items():
        _descriptor = _frame.DESCRIPTOR.fields_by_name[_kind]
        _sub = getattr(pb, _descriptor.message_type.name)
        _LAYOUT[_frame, _kind] = (_descriptor.number, _number(_sub, _field), _sub)
        _KINDS[_frame, _descriptor.number] = _kind


def _parts(data: Any) -> list:
    return data.parts if isinstance(data, Pieces) else [data]


def encoded(frame: Message, kind: str, data: Any) -> Union[bytes, Message]:
    """``frame`` (its ``kind`` sub-message filled, all but the bulk field) with the bulk field
    set to ``data`` (bytes-like or :class:`Pieces` of at most ``FRAME_DATA`` bytes): the
    frame itself when ``data`` is small, else its encoding, the pieces joined once."""
    number, field_number, _ = _LAYOUT[type(frame), kind]
    size = len(data)
    sub = getattr(frame, kind)
    if size < BULK:
        if type(data) is not bytes:
            data = b"".join(_parts(data))
        setattr(sub, _BULK_FIELDS[type(frame)][kind], data)
        return frame
    sub.SetInParent()
    small = sub.SerializeToString()
    tail = _key(field_number) + _varint(size)
    body = len(small) + len(tail) + size
    return b"".join([_key(number), _varint(body), small, tail, *_parts(data)])


def chunk_frames(frame_class: type, payload: Any) -> Iterator[bytes]:
    """``payload`` as encoded Chunk frames of ``frame_class``, each joined once as it is taken."""
    number, field_number, _ = _LAYOUT[frame_class, "chunk"]
    outer, inner = _key(number), _key(field_number)

    def head(size: int) -> bytes:
        body = len(inner) + len(_varint(size)) + size
        return outer + _varint(body) + inner + _varint(size)
    return frames_of(payload, FRAME_DATA, head)


def serialize(frame: Union[bytes, Message]) -> bytes:
    """What gRPC sends: frames already encoded as they are, others serialised by protobuf."""
    return frame if type(frame) is bytes else frame.SerializeToString()


class _BulkView:
    """A received sub-message: its small fields from protobuf, its bulk field a memoryview."""

    __slots__ = ("_message", "_field", "_data")

    def __init__(self, message: Message, field: str, data: memoryview) -> None:
        self._message, self._field, self._data = message, field, data

    def __getattr__(self, name: str) -> Any:
        if name == self._field:
            return self._data
        return getattr(self._message, name)


class BulkFrame:
    """A received frame with bulk bytes; reads like the protobuf frame it encodes."""

    __slots__ = ("_kind", "_view")

    def __init__(self, kind: str, view: _BulkView) -> None:
        self._kind, self._view = kind, view

    def WhichOneof(self, group: str) -> Optional[str]:  # noqa: N802 (protobuf's name)
        return self._kind if group == "frame" else None

    def __getattr__(self, name: str) -> Any:
        if name == self._kind:
            return self._view
        raise AttributeError(f"a {self._kind} frame has no {name}")


def _read_varint(raw: memoryview, at: int, longest: int = 10) -> tuple[int, int]:
    """The varint at ``at`` and where it ends; ValueError past ``longest`` bytes (5 for keys and
    lengths: protobuf refuses longer ones, and so must this, handing them to protobuf)."""
    value = shift = 0
    for _ in range(longest):
        byte = raw[at]            # IndexError when truncated
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise ValueError("varint too long")


def _split(raw: memoryview, field_number: int) -> Optional[tuple[bytes, memoryview]]:
    """The sub-message's fields without the bulk one, and the bulk one; None if unusual."""
    rest: list = []
    bulk = None
    at = 0
    while at < len(raw):
        start = at
        key, at = _read_varint(raw, at, 5)
        wire = key & 7
        if wire == 0:
            _, at = _read_varint(raw, at)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == _LEN:
            length, at = _read_varint(raw, at, 5)
            if key >> 3 == field_number:
                if bulk is not None:
                    return None   # (repeated: protobuf's rule, the last one wins, is protobuf's to apply)
                bulk = raw[at:at + length]
                at += length
                if at > len(raw):
                    return None
                continue
            at += length
        else:
            return None
        if at > len(raw):
            return None
        rest.append(raw[start:at])
    if bulk is None:
        return None
    return b"".join(rest), bulk


def decoded(frame_class: type, raw: bytes) -> Any:
    """The frame ``raw`` encodes: a protobuf message, or a :class:`BulkFrame` when it carries bulk
    bytes; ``DecodeError`` (protobuf's) when it is malformed."""
    if len(raw) >= BULK:
        try:
            frame = _bulk(frame_class, memoryview(raw))
        except (IndexError, ValueError):
            frame = None
        if frame is not None:
            return frame
    return frame_class.FromString(raw)


def _bulk(frame_class: type, raw: memoryview) -> Optional[BulkFrame]:
    key, at = _read_varint(raw, 0, 5)
    kind = _KINDS.get((frame_class, key >> 3))
    if kind is None or key & 7 != _LEN:
        return None
    length, at = _read_varint(raw, at, 5)
    if at + length != len(raw):
        return None   # (more than one field: protobuf's to merge)
    _, field_number, sub_class = _LAYOUT[frame_class, kind]
    split = _split(raw[at:], field_number)
    if split is None:
        return None
    small, data = split
    return BulkFrame(kind, _BulkView(sub_class.FromString(small), _BULK_FIELDS[frame_class][kind], data))
