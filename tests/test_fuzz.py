"""Fuzzing a real worker: whatever arrives, a clear status, and the worker stays well.

Hypothesis throws at hand-started workers (``python -m turbolift worker``,
real sockets): random bytes as the raw body of every method of the
``turbolift.v1.Worker`` service (read from the generated descriptor, so a
method added later is fuzzed too), well-formed messages carrying garbage,
truncated or wrongly typed ``arguments`` and batch ``items``, miscounted
batches, unknown and malformed bundle ids, unknown modules and functions in
bundles the worker holds, bundle and blob uploads that lie about their id
or size, and calls naming unknown or junk blobs. Each answer must be a
valid reply or a gRPC status from a short list of clear ones, with a
message; never INTERNAL or UNKNOWN (gRPC's "an exception escaped the
handler"), never silence until the deadline. (The standard health service
is grpcio-health-checking's own servicer and is not fuzzed here: it answers
a malformed request with INTERNAL "Exception deserializing request!".)

After fuzzing, every test checks that the worker is intact: its health
check says SERVING, its server process is the one it started with (the
supervisor would silently restart a crashed one), a normal call works,
no partial upload is left in its cache, and the server's resident memory
grew by less than ``RSS_GROWTH_LIMIT``.

A second, token-protected worker must refuse every fuzzed request that
lacks the token, whatever other metadata it carries, before parsing it.

The tests at the end of this file are regressions of bugs this fuzzing
found (junk bundles, SystemExit at import, unruly argument tuples, bundle
ids with a trailing newline, blob declarations committing memory).
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import pickle
import secrets
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import grpc
import pytest
from conftest import WorkerProcess, write_files
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from turbolift._caller import bundling as _bundle
from turbolift._wire import blobs as _blobs
from turbolift._wire import serialize as _serialize
from turbolift._wire.auth import metadata_for
from turbolift.v1 import worker_pb2 as pb

SC = grpc.StatusCode
SERVICE = pb.DESCRIPTOR.services_by_name["Worker"]
METHODS = sorted(SERVICE.methods_by_name)
RPC_TIMEOUT = 10.0
RSS_GROWTH_LIMIT = 100 * 1024 * 1024
# Statuses that mean "an exception escaped the handler" or "gRPC broke": never acceptable.
NEVER = {SC.INTERNAL, SC.UNKNOWN, SC.DEADLINE_EXCEEDED}
CLEAR = {SC.INVALID_ARGUMENT, SC.NOT_FOUND, SC.FAILED_PRECONDITION, SC.UNAUTHENTICATED, SC.UNIMPLEMENTED}
OUTCOMES = {pb.RETURNED, pb.RAISED, pb.BUNDLE_MISSING}

FUZZ = settings(max_examples=150, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])

TARGET = "tl_fuzz_target"
TARGET_SOURCE = '''
"""Functions the fuzzed worker runs: their answers are easy to predict."""


def echo(*args, **kwargs):
    return list(args), kwargs


def fail(*args, **kwargs):
    raise ValueError("fail was called")


class StubbornTuple(tuple):
    """A tuple that refuses to be iterated."""

    def __iter__(self):
        raise RuntimeError("a StubbornTuple cannot be iterated")
'''
EXITS = "tl_fuzz_exits"
EXITS_SOURCE = '''
raise SystemExit("this module ends its interpreter when imported")


def never():
    return 1
'''


# -- talking to a worker with raw bytes -----------------------------------------

@dataclass
class Answer:
    """What a worker answered: a status, its message, and the parsed replies (if OK)."""

    code: grpc.StatusCode
    details: str
    replies: list


def invoke(channel: grpc.Channel, method: str, body: Union[bytes, list], metadata: tuple = (),
           timeout: float = RPC_TIMEOUT) -> Answer:
    """Call ``method`` with raw request bytes (a list of them for client streams).

    No serialiser on our side: the bytes reach the worker exactly as given.
    """
    descriptor = SERVICE.methods_by_name[method]
    path = f"/{SERVICE.full_name}/{method}"
    bodies = body if isinstance(body, list) else [body]
    single = bodies[0] if bodies else b""
    shape = (descriptor.client_streaming, descriptor.server_streaming)
    try:
        if shape == (False, False):
            raw = [channel.unary_unary(path)(single, timeout=timeout, metadata=metadata)]
        elif shape == (False, True):
            raw = list(channel.unary_stream(path)(single, timeout=timeout, metadata=metadata))
        elif shape == (True, False):
            raw = [channel.stream_unary(path)(iter(bodies), timeout=timeout, metadata=metadata)]
        else:
            raw = list(channel.stream_stream(path)(iter(bodies), timeout=timeout, metadata=metadata))
    except grpc.RpcError as exc:
        return Answer(exc.code(), exc.details() or "", [])
    reply_class = message_factory.GetMessageClass(descriptor.output_type)
    return Answer(SC.OK, "", [reply_class.FromString(r) for r in raw])


def invoke_path(channel: grpc.Channel, path: str, body: bytes, metadata: tuple = ()) -> Answer:
    try:
        channel.unary_unary(path)(body, timeout=RPC_TIMEOUT, metadata=metadata)
    except grpc.RpcError as exc:
        return Answer(exc.code(), exc.details() or "", [])
    return Answer(SC.OK, "", [])


def check(answer: Answer, allowed: set, what: str) -> Answer:
    """Fail unless ``answer`` is one of ``allowed`` and, if an error, says something."""
    assert answer.code not in NEVER, (
        f"{what}: the worker answered {answer.code.name} ({answer.details!r}); a bad request must get "
        "a clear status such as INVALID_ARGUMENT, never an escaped exception or silence")
    expected = sorted(code.name for code in allowed)
    got = f"{answer.code.name} {answer.details!r}"
    assert answer.code in allowed, f"{what}: expected one of {expected}, got {got}"
    if answer.code == SC.OK:
        for reply in answer.replies:
            outcome = getattr(reply, "outcome", None)
            if outcome is not None:
                assert outcome in OUTCOMES, f"{what}: reply with outcome {outcome}"
    else:
        assert isinstance(answer.details, str) and answer.details.strip(), (
            f"{what}: {answer.code.name} without a message")
    return answer


def chunk_bytes(bundle_id: Optional[str], size: int, pieces: list) -> list:
    """Serialised BundleChunk messages: a header on the first one unless ``bundle_id`` is None."""
    chunks = []
    for index, piece in enumerate(pieces or [b""]):
        chunk = pb.BundleChunk(data=piece)
        if index == 0 and bundle_id is not None:
            chunk.header.bundle_id = bundle_id
            chunk.header.size = size
        chunks.append(chunk.SerializeToString())
    return chunks


def upload(channel: grpc.Channel, bundle: _bundle.Bundle, metadata: tuple = ()) -> Answer:
    """Upload a real bundle in one chunk."""
    return invoke(channel, "PutBundle", chunk_bytes(bundle.id, len(bundle.data), [bundle.data]), metadata)


def blob_chunks(size: int, pieces: list) -> list:
    """Serialised BlobChunk messages: the declared ``size`` on the first one."""
    return [pb.BlobChunk(size=size if index == 0 else 0, data=piece).SerializeToString()
            for index, piece in enumerate(pieces)]


def call_body(bundle_id: str, module: str, qualname: str, arguments: bytes = b"", blob: str = "") -> bytes:
    return pb.CallRequest(function=pb.FunctionRef(bundle_id=bundle_id, module=module, qualname=qualname),
                          arguments=arguments, arguments_blob=blob, call_id="fuzz").SerializeToString()


def batch_body(bundle_id: str, module: str, qualname: str, items: bytes, count: int) -> bytes:
    return pb.BatchRequest(function=pb.FunctionRef(bundle_id=bundle_id, module=module, qualname=qualname),
                           items=items, count=count, call_id="fuzz").SerializeToString()


def arguments(*args: Any, **kwargs: Any) -> bytes:
    return _serialize.dumps((args, kwargs), for_worker=True)


def sha256_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def zip_of(entries: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# -- the workers under test ------------------------------------------------------

def proc_status(pid: int, field: str) -> int:
    """A size from /proc/PID/status (VmRSS: resident now, VmHWM: peak resident), in bytes."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


def vm_rss(pid: int) -> int:
    return proc_status(pid, "VmRSS")


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(child) for child in handle.read().split()]


class FuzzedWorker:
    """A hand-started worker, the bundles it holds, and its state before fuzzing."""

    def __init__(self, cache_dir: Path, token: Optional[str], token_file: Optional[Path],
                 bundles: list) -> None:
        self.cache_dir = cache_dir
        # Without a token file: a worker deliberately open to local users (the default is a token).
        self.process = WorkerProcess(cache_dir, token_file=token_file,
                                     extra_args=() if token_file else ("--allow-any-local-user",))
        self.address = self.process.address
        self.channel = grpc.insecure_channel(self.address)
        self.token = token
        self.metadata = metadata_for(token)
        for bundle in bundles:
            assert upload(self.channel, bundle, self.metadata).code == SC.OK
        self.held = {bundle.id for bundle in bundles}
        self.target_id = bundles[0].id
        # The hand-started worker is a supervisor; the gRPC server is its child.
        self.server_pid = self.describe().pid
        assert self.server_pid in children_of(self.process.process.pid), "Describe's pid is not the server"
        self.normal_call()  # warm up: bundle loaded, module imported, reply path exercised
        self.baseline_rss = vm_rss(self.server_pid)

    def describe(self) -> pb.DescribeReply:
        answer = invoke(self.channel, "Describe", b"", self.metadata)
        assert answer.code == SC.OK, answer
        return answer.replies[0]

    def normal_call(self) -> None:
        body = call_body(self.target_id, TARGET, "echo", arguments(7, key="value"))
        answer = invoke(self.channel, "Call", body, self.metadata)
        assert answer.code == SC.OK and answer.replies[0].outcome == pb.RETURNED, answer
        assert _serialize.loads(answer.replies[0].result) == ([7], {"key": "value"})

    def assert_intact(self) -> None:
        """Healthy, same server process, normal calls work, memory bounded, no upload debris."""
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE.full_name), timeout=RPC_TIMEOUT)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        described = self.describe()
        assert (described.pid, described.previous_exit) == (self.server_pid, ""), (
            "the worker's server process died and was restarted during fuzzing")
        self.normal_call()
        growth = vm_rss(self.server_pid) - self.baseline_rss
        assert growth < RSS_GROWTH_LIMIT, f"the worker's RSS grew by {growth / 2**20:.0f} MiB"
        debris = [n for n in os.listdir(self.cache_dir / "bundles") if n.startswith(".")]
        assert not debris, f"partial uploads or unpackings left in the cache: {debris}"

    def stop(self) -> None:
        self.channel.close()
        self.process.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[Any]:
    """A small project on sys.path: the module whose bundle the workers run."""
    root = tmp_path_factory.mktemp("fuzz-project")
    write_files(root, {f"{TARGET}.py": TARGET_SOURCE, f"{EXITS}.py": EXITS_SOURCE})
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(TARGET)
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(TARGET, None)


@pytest.fixture(scope="module")
def target_bundle(project) -> _bundle.Bundle:
    bundle = _bundle._module_bundle(TARGET)
    assert TARGET in bundle.manifest["modules"], "the target must travel as source"
    return bundle


@pytest.fixture(scope="module")
def json_bundle() -> _bundle.Bundle:
    """An 'installed module' bundle: a manifest only, the worker imports its own json."""
    return _bundle._module_bundle("json")


@pytest.fixture(scope="module")
def open_worker(tmp_path_factory, target_bundle, json_bundle) -> Iterator[FuzzedWorker]:
    """A loopback worker without a token: everything reaches its handlers."""
    worker = FuzzedWorker(tmp_path_factory.mktemp("open-worker-cache"), None, None,
                          [target_bundle, json_bundle])
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def protected_worker(tmp_path_factory, target_bundle) -> Iterator[FuzzedWorker]:
    """A worker that requires a token: requests without it must never reach a handler."""
    token = secrets.token_urlsafe(24)
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(token + "\n")
    worker = FuzzedWorker(tmp_path_factory.mktemp("protected-worker-cache"), token, token_file,
                          [target_bundle])
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def scratch_worker(tmp_path, target_bundle) -> Iterator[FuzzedWorker]:
    """A worker of its own for tests that leave junk in its cache."""
    cache = tmp_path / "scratch-cache"
    cache.mkdir()
    worker = FuzzedWorker(cache, None, None, [target_bundle])
    try:
        yield worker
    finally:
        worker.stop()


# -- strategies ------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(max_size=16) | st.binary(max_size=16))
plain_data = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)),
    max_leaves=10)
# Exactly an (args tuple, kwargs dict) pair, sometimes with keys that are not strings.
argument_pairs = st.tuples(st.lists(plain_data, max_size=3).map(tuple),
                           st.dictionaries(st.text(max_size=8) | st.integers(), plain_data, max_size=3))
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
malformed_ids = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789abcdef", max_size=100).filter(lambda h: len(h) != 64).map("sha256:".__add__),
    hex64.map(lambda h: "sha256:" + h.upper()).filter(lambda i: i != i.lower()),
    hex64.map(lambda h: "sha1:" + h),
    hex64.map(lambda h: " sha256:" + h),
    hex64.map(lambda h: "sha256:" + h + " "),
    hex64.map(lambda h: "sha256:" + h + "\n\n"),
    hex64.map(lambda h: "sha256:" + h[:-1] + "g"),
    st.just(""),
)


@st.composite
def truncated_pickles(draw) -> bytes:
    """A valid serialised argument pair, cut short anywhere: never a valid pickle."""
    whole = _serialize.dumps(draw(argument_pairs), for_worker=True)
    return whole[:draw(st.integers(0, len(whole) - 1))]


def expected_echo(pair: Any) -> Optional[tuple]:
    """What ``echo`` returns for an argument pair, or None when the call itself raises."""
    args, kwargs = pair
    if not all(isinstance(key, str) for key in kwargs):
        return None
    return list(args), kwargs


def is_argument_pair(value: Any) -> bool:
    return (isinstance(value, tuple) and len(value) == 2
            and isinstance(value[0], tuple) and isinstance(value[1], dict))


# -- the open worker: bad input of every kind --------------------------------------

RAW_EXPECTED = {
    "Call": {SC.INVALID_ARGUMENT, SC.FAILED_PRECONDITION},
    "CallBatch": {SC.INVALID_ARGUMENT, SC.FAILED_PRECONDITION},
    # Garbage in place of the handshake: refused; an empty stream or a lone Hello: answered, then closed.
    "Session": {SC.OK, SC.INVALID_ARGUMENT},
    "PutBundle": {SC.INVALID_ARGUMENT},
    "Describe": {SC.OK, SC.INVALID_ARGUMENT},
    "PutBlob": {SC.OK, SC.INVALID_ARGUMENT},
    "GetBlob": {SC.INVALID_ARGUMENT, SC.NOT_FOUND},
}
# Declared blob sizes in the random fuzz stay below this (the test of a large declaration with little
# data is separate, below), so that the fuzz itself stays light on this shared machine.
LARGEST_SAFE_DECLARATION = 16 * 2**20


def declared_blob_size(bodies: list) -> int:
    """The size the first chunk of a PutBlob declares (0 when it does not parse)."""
    try:
        return pb.BlobChunk.FromString(bodies[0]).size if bodies else 0
    except DecodeError:
        return 0


@settings(FUZZ, max_examples=300)
@given(method=st.sampled_from(METHODS), bodies=st.lists(st.binary(max_size=2048), max_size=4))
@example(method="Call", bodies=[b"\xff"])
@example(method="CallBatch", bodies=[b"\x0a\xff\xff\xff\xff\x0f"])
@example(method="PutBundle", bodies=[])
@example(method="PutBundle", bodies=[b"", b"\x12\x03abc"])
@example(method="Describe", bodies=[b"\x08"])
@example(method="Session", bodies=[b"\x0a\x02\x0a\x00"])
@example(method="Session", bodies=[pb.ClientFrame(hello=pb.Hello(nonce=b"n" * 32)).SerializeToString(),
                                   b"\xff"])
def test_random_bytes_to_every_method_get_a_clear_status(open_worker, method, bodies):
    """Raw garbage as the request body of each method: a clear status, never an escaped exception."""
    if method == "PutBlob":
        assume(declared_blob_size(bodies) <= LARGEST_SAFE_DECLARATION)
    allowed = RAW_EXPECTED.get(method, CLEAR | {SC.OK})  # a method added later: any clear answer
    answer = check(invoke(open_worker.channel, method, bodies), allowed, f"{method} with random bytes")
    if method == "Describe" and answer.code == SC.OK:
        assert answer.replies[0].pid == open_worker.server_pid


@FUZZ
@given(name=st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,30}", fullmatch=True), body=st.binary(max_size=64),
       other_service=st.booleans())
def test_unknown_methods_are_unimplemented(open_worker, protected_worker, name, body, other_service):
    """A method or service the worker does not have is UNIMPLEMENTED; without the token it is refused
    like any other, so method names cannot be probed."""
    assume(other_service or name not in METHODS)
    path = f"/turbolift.v1.{name}X/Call" if other_service else f"/{SERVICE.full_name}/{name}"
    check(invoke_path(open_worker.channel, path, body), {SC.UNIMPLEMENTED}, f"{path} on the open worker")
    check(invoke_path(protected_worker.channel, path, body), {SC.UNAUTHENTICATED},
          f"{path} without the token")


@settings(FUZZ, max_examples=200)
@given(kind=st.sampled_from(["garbage", "truncated", "value", "pair"]), data=st.data())
def test_call_arguments_garbage_truncated_or_of_the_wrong_type(open_worker, target_bundle, kind, data):
    """Call with a real function and bad ``arguments``: INVALID_ARGUMENT, or the function's own answer."""
    if kind == "garbage":
        payload, value = data.draw(st.binary(max_size=4096)), None
    elif kind == "truncated":
        payload, value = data.draw(truncated_pickles()), None
    else:
        value = data.draw(plain_data if kind == "value" else argument_pairs)
        payload = _serialize.dumps(value, for_worker=True)
    answer = invoke(open_worker.channel, "Call", call_body(target_bundle.id, TARGET, "echo", payload))
    what = f"Call with {kind} arguments {payload[:60]!r}"
    if kind == "garbage":
        check(answer, {SC.INVALID_ARGUMENT, SC.OK}, what)
    elif kind == "truncated":
        check(answer, {SC.INVALID_ARGUMENT}, what)
        assert "could not deserialise the arguments" in answer.details
    elif not is_argument_pair(value):
        check(answer, {SC.INVALID_ARGUMENT}, what)
        assert "(args tuple, kwargs dict)" in answer.details
    else:
        reply = check(answer, {SC.OK}, what).replies[0]
        expected = expected_echo(value)
        if expected is None:  # keywords that are not strings: the call itself raises TypeError
            assert reply.outcome == pb.RAISED and reply.error.type_name == "builtins.TypeError", reply
        else:
            assert reply.outcome == pb.RETURNED, reply
            assert _serialize.loads(reply.result) == expected


@FUZZ
@given(kind=st.sampled_from(["garbage", "truncated", "value", "list"]), data=st.data(),
       miscount=st.integers(0, 2**32 - 1) | st.none())
def test_batch_items_garbage_truncated_wrongly_typed_or_miscounted(open_worker, target_bundle, kind, data,
                                                                    miscount):
    """CallBatch: items that are not a list of ``count`` argument tuples get INVALID_ARGUMENT.

    When they are, each item's outcome is what ``echo(*item)`` gives locally.
    """
    value: Any = None
    if kind == "garbage":
        payload = data.draw(st.binary(max_size=4096))
    elif kind == "truncated":
        payload = data.draw(truncated_pickles())
    else:
        value = data.draw(st.lists(plain_data, max_size=6) if kind == "list" else plain_data)
        payload = _serialize.dumps(value, for_worker=True)
    count = miscount if miscount is not None else (len(value) if isinstance(value, list) else 1)
    body = batch_body(target_bundle.id, TARGET, "echo", payload, count)
    answer = invoke(open_worker.channel, "CallBatch", body)
    what = f"CallBatch with {kind} items {payload[:60]!r} and count {count}"
    if kind == "garbage":
        check(answer, {SC.INVALID_ARGUMENT, SC.OK}, what)
    elif kind == "truncated":
        check(answer, {SC.INVALID_ARGUMENT}, what)
    elif not (isinstance(value, list) and len(value) == count):
        check(answer, {SC.INVALID_ARGUMENT}, what)
        assert f"a list of {count} argument tuples" in answer.details
    else:
        reply = check(answer, {SC.OK}, what).replies[0]
        assert reply.outcome == pb.RETURNED
        outcomes = _serialize.loads(reply.results)
        assert len(outcomes) == count
        for item, (ok, result) in zip(value, outcomes):
            try:
                expected = (list(item), {})
            except TypeError:  # echo(*item) with an item that is not iterable
                assert not ok and result["type_name"] == "builtins.TypeError"
            else:
                assert ok and result == expected


def resolves_locally(module: Any, qualname: str) -> bool:
    """True when ``qualname`` names a callable in ``module``, as the worker resolves it."""
    obj = module
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        return False
    return callable(obj)


@FUZZ
@given(which=st.sampled_from(["unknown", "malformed", "target", "json"]), data=st.data(),
       module=st.sampled_from([TARGET, "json"]) | st.text(max_size=40),
       qualname=st.sampled_from(["echo", "fail", "loads", "StubbornTuple"]) | st.text(max_size=40),
       method=st.sampled_from(["Call", "CallBatch"]))
def test_function_references_unknown_malformed_or_missing(open_worker, target_bundle, json_bundle, project,
                                                         which, data, module, qualname, method):
    """Unknown bundle: BUNDLE_MISSING; malformed id: FAILED_PRECONDITION; no such function: NOT_FOUND."""
    if which == "unknown":
        bundle_id = "sha256:" + data.draw(hex64)
        assume(bundle_id not in open_worker.held)
    elif which == "malformed":
        bundle_id = data.draw(malformed_ids)
    else:
        bundle_id = (target_bundle if which == "target" else json_bundle).id
    body = (call_body(bundle_id, module, qualname, arguments(7)) if method == "Call"
            else batch_body(bundle_id, module, qualname, _serialize.dumps([(7,)], for_worker=True), 1))
    answer = invoke(open_worker.channel, method, body)
    what = f"{method} of {module!r}.{qualname!r} in bundle {bundle_id!r}"
    if which == "unknown":
        reply = check(answer, {SC.OK}, what).replies[0]
        assert reply.outcome == pb.BUNDLE_MISSING
    elif which == "malformed":
        check(answer, {SC.FAILED_PRECONDITION}, what)
        assert "malformed bundle id" in answer.details
    else:
        home = project if which == "target" else json
        if module == home.__name__ and resolves_locally(home, qualname):
            reply = check(answer, {SC.OK}, what).replies[0]
            assert reply.outcome in ((pb.RETURNED, pb.RAISED) if method == "Call" else (pb.RETURNED,))
        else:
            check(answer, {SC.NOT_FOUND}, what)
            assert "cannot find" in answer.details


@FUZZ
@given(lie=st.sampled_from(["no header", "no chunks", "malformed id", "huge size", "more than declared",
                            "less than declared", "wrong hash", "already held"]),
       pieces=st.lists(st.binary(max_size=4096), min_size=1, max_size=5), data=st.data())
def test_bundle_uploads_that_lie_are_refused(open_worker, target_bundle, lie, pieces, data):
    """PutBundle refuses a missing header, a bad id, a huge or wrong size and a wrong hash.

    Memory must not follow the declared size (checked by ``assert_intact``):
    a worker that reserved what a header claims would not survive this test.
    """
    total = sum(map(len, pieces))
    bundle_id = "sha256:" + data.draw(hex64)
    assume(bundle_id not in open_worker.held)
    size = total
    if lie == "no header":
        chunks = chunk_bytes(None, 0, pieces)
    elif lie == "no chunks":
        chunks = []
    elif lie == "malformed id":
        chunks = chunk_bytes(data.draw(malformed_ids), total, pieces)
    elif lie == "huge size":
        chunks = chunk_bytes(bundle_id, data.draw(st.integers(2**40, 2**64 - 1)), pieces)
    elif lie == "more than declared":
        assume(total > 0)
        chunks = chunk_bytes(bundle_id, data.draw(st.integers(0, total - 1)), pieces)
    elif lie == "less than declared":
        size = data.draw(st.integers(total + 1, total + 64 * 2**20))
        chunks = chunk_bytes(bundle_id, size, pieces)
    elif lie == "wrong hash":
        assume(sha256_id(b"".join(pieces)) != bundle_id)
        chunks = chunk_bytes(bundle_id, total, pieces)
    else:  # content-addressed: a bundle already held is not received twice
        chunks = chunk_bytes(target_bundle.id, total, pieces)
    answer = invoke(open_worker.channel, "PutBundle", chunks)
    if lie == "already held":
        assert check(answer, {SC.OK}, lie).replies[0].already_present
    else:
        check(answer, {SC.INVALID_ARGUMENT}, f"PutBundle with {lie} (declared {size}, sent {total})")
    assert bundle_id not in open_worker.describe().bundles


@FUZZ
@given(lie=st.sampled_from(["no chunks", "huge size", "more than declared", "less than declared", "honest"]),
       pieces=st.lists(st.binary(max_size=4096), min_size=1, max_size=5), data=st.data())
def test_blob_uploads_that_lie_are_refused_and_honest_ones_are_claimed_once(open_worker, lie, pieces, data):
    """PutBlob refuses no chunks, sizes over the limit and sizes that do not match what was sent.

    An honest upload comes back byte for byte from GetBlob, once: a second
    GetBlob of the same id is NOT_FOUND.
    """
    total = sum(map(len, pieces))
    size = total
    if lie == "no chunks":
        pieces = []
    elif lie == "huge size":
        size = data.draw(st.integers(_blobs.MAX_BLOB + 1, 2**64 - 1))
    elif lie == "more than declared":
        assume(total > 0)
        size = data.draw(st.integers(0, total - 1))
    elif lie == "less than declared":
        size = data.draw(st.integers(total + 1, total + 4 * 2**20))
    answer = invoke(open_worker.channel, "PutBlob", blob_chunks(size, pieces))
    what = f"PutBlob, {lie} (declared {size}, sent {total})"
    if lie != "honest":
        check(answer, {SC.INVALID_ARGUMENT}, what)
        return
    ref = check(answer, {SC.OK}, what).replies[0]
    assert ref.size == total
    request = pb.BlobRef(blob_id=ref.blob_id).SerializeToString()
    fetched = check(invoke(open_worker.channel, "GetBlob", request), {SC.OK}, "GetBlob of an honest upload")
    assert b"".join(chunk.data for chunk in fetched.replies) == b"".join(pieces)
    again = invoke(open_worker.channel, "GetBlob", request)
    check(again, {SC.NOT_FOUND}, "a second GetBlob of the same blob")


@FUZZ
@given(kind=st.sampled_from(["unknown", "garbage", "truncated", "pair"]), data=st.data())
def test_calls_naming_unknown_or_junk_blobs_get_a_clear_status(open_worker, target_bundle, kind, data):
    """Call with ``arguments_blob``: an unknown blob is NOT_FOUND; a blob of junk is INVALID_ARGUMENT.

    A blob is consumed by the call that names it: naming it again is NOT_FOUND.
    """
    value: Any = None
    if kind == "unknown":
        blob_id = data.draw(st.text(min_size=1, max_size=80))
    else:
        if kind == "garbage":
            payload = data.draw(st.binary(max_size=4096))
        elif kind == "truncated":
            payload = data.draw(truncated_pickles())
        else:
            value = data.draw(argument_pairs)
            payload = _serialize.dumps(value, for_worker=True)
        uploaded = invoke(open_worker.channel, "PutBlob", blob_chunks(len(payload), [payload]))
        blob_id = check(uploaded, {SC.OK}, "PutBlob of arguments").replies[0].blob_id
    body = call_body(target_bundle.id, TARGET, "echo", blob=blob_id)
    answer = invoke(open_worker.channel, "Call", body)
    what = f"Call naming a blob of {kind} arguments"
    if kind == "unknown":
        check(answer, {SC.NOT_FOUND}, what)
        return
    if kind == "garbage":
        check(answer, {SC.INVALID_ARGUMENT, SC.OK}, what)
    elif kind == "truncated":
        check(answer, {SC.INVALID_ARGUMENT}, what)
    else:
        reply = check(answer, {SC.OK}, what).replies[0]
        expected = expected_echo(value)
        assert reply.outcome == (pb.RAISED if expected is None else pb.RETURNED), reply
        if expected is not None:
            assert _serialize.loads(reply.result) == expected
    check(invoke(open_worker.channel, "Call", body), {SC.NOT_FOUND}, "a second call naming the same blob")


def test_large_garbage_payloads_are_refused_and_memory_stays_bounded(open_worker, target_bundle):
    """Megabytes of garbage, many times over: refused each time, and the worker's memory stays flat."""
    garbage = os.urandom(5 * 2**20)  # more than gRPC's default 4 MiB message limit
    for _ in range(8):
        answer = invoke(open_worker.channel, "Call", call_body(target_bundle.id, TARGET, "echo", garbage))
        # A worker may refuse an oversized message outright (RESOURCE_EXHAUSTED) instead of parsing it.
        check(answer, {SC.INVALID_ARGUMENT, SC.RESOURCE_EXHAUSTED}, "Call with 5 MiB of garbage arguments")
        answer = invoke(open_worker.channel, "CallBatch",
                        batch_body(target_bundle.id, TARGET, "echo", garbage, 3))
        check(answer, {SC.INVALID_ARGUMENT, SC.RESOURCE_EXHAUSTED}, "CallBatch with 5 MiB of garbage items")
    pieces = [os.urandom(2**20) for _ in range(4)] * 6  # 24 MiB streamed under a wrong id
    answer = invoke(open_worker.channel, "PutBundle",
                    chunk_bytes("sha256:" + "0" * 64, 24 * 2**20, pieces))
    check(answer, {SC.INVALID_ARGUMENT}, "PutBundle of 24 MiB under a wrong id")
    open_worker.assert_intact()


def test_the_open_worker_is_intact_after_all_the_fuzzing(open_worker):
    """Health SERVING, the same server process, a normal call works, RSS grew < 100 MiB."""
    open_worker.assert_intact()


# -- the protected worker: nothing gets past the token ------------------------------

@st.composite
def metadata_without_the_token(draw, token: str) -> tuple:
    """Random call metadata, with near misses of the token, that never carries the right one."""
    near_misses = [token, f"Bearer{token}", f"Bearer  {token}", f"bearer {token}", f"BEARER {token}",
                   f"Bearer {token[:-1]}", f"Bearer {token}x", f"Bearer {token.swapcase()}", f"Basic {token}",
                   f" Bearer {token}", f"Bearer {token} ", "Bearer ", "", f"Bearer {token[::-1]}"]
    printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64)
    authorization = st.sampled_from(near_misses) | printable | printable.map("Bearer ".__add__)
    other_key = st.from_regex(r"x-[a-z0-9_.-]{0,20}", fullmatch=True).filter(lambda k: not k.endswith("-bin"))
    entry = st.tuples(st.just("authorization"), authorization) | st.tuples(other_key, printable)
    entries = tuple(draw(st.lists(entry, max_size=5)))
    assume(("authorization", f"Bearer {token}") not in entries)
    return entries


@FUZZ
@given(method=st.sampled_from(METHODS), bodies=st.lists(st.binary(max_size=1024), max_size=3), data=st.data())
def test_without_the_token_every_method_is_refused(protected_worker, method, bodies, data):
    """Any body, any metadata but the token: UNAUTHENTICATED, with a message that names the token.

    A Session proves the token in its handshake, not in its metadata: random
    frames get no further than a Challenge (a refusal, or the stream closed).
    """
    metadata = data.draw(metadata_without_the_token(protected_worker.token))
    if method == "Session":
        answer = check(invoke(protected_worker.channel, method, bodies, metadata),
                       {SC.UNAUTHENTICATED, SC.INVALID_ARGUMENT, SC.OK}, f"Session with metadata {metadata}")
        assert all(reply.WhichOneof("frame") == "challenge" for reply in answer.replies), answer.replies
        return
    answer = check(invoke(protected_worker.channel, method, bodies, metadata), {SC.UNAUTHENTICATED},
                   f"{method} with metadata {metadata}")
    assert "token" in answer.details


class WritesFileWhenUnpickled:
    """Unpickling this calls open(path, "w"): the file's existence is the proof it was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_payload_that_writes_a_file_never_runs_without_the_token_whatever_the_metadata(
        protected_worker, target_bundle, tmp_path):
    """Random metadata without the token, on every payload-carrying route: no file appears.

    The payload travels inline (Call, CallBatch, and a Session whose handshake
    cannot prove the token), as a blob upload
    (PutBlob), and as a blob uploaded *with* the token that an unauthenticated
    Call names (and an unauthenticated GetBlob tries to take). The controls at
    the end send the same payloads with the token: the worker unpickles them
    and the file appears, so its absence before is the interceptor's doing
    (and the blob was still there, untouched). test_token_auth.py does the
    same for Call with fixed metadata.
    """
    evidence = tmp_path / "unpickled-evidence"
    evil_arguments = pickle.dumps(((WritesFileWhenUnpickled(str(evidence)),), {}))
    evil_items = pickle.dumps([(WritesFileWhenUnpickled(str(evidence)),)])
    uploaded = invoke(protected_worker.channel, "PutBlob", blob_chunks(len(evil_arguments), [evil_arguments]),
                      protected_worker.metadata)
    blob_id = check(uploaded, {SC.OK}, "uploading the payload as a blob with the token").replies[0].blob_id
    routes = {
        "Call": call_body(target_bundle.id, TARGET, "echo", evil_arguments),
        "Session with a guessed proof": [
            pb.ClientFrame(hello=pb.Hello(nonce=b"n" * 32)).SerializeToString(),
            pb.ClientFrame(proof=pb.Proof(proof=b"p" * 32)).SerializeToString(),
            pb.ClientFrame(invoke=pb.Invoke(function=pb.FunctionRef(
                bundle_id=target_bundle.id, module=TARGET, qualname="echo"), arguments=evil_arguments,
                forward_events=True)).SerializeToString()],
        "CallBatch": batch_body(target_bundle.id, TARGET, "echo", evil_items, 1),
        "PutBlob": blob_chunks(len(evil_arguments), [evil_arguments]),
        "Call naming the blob": call_body(target_bundle.id, TARGET, "echo", blob=blob_id),
        "GetBlob of the blob": pb.BlobRef(blob_id=blob_id).SerializeToString(),
    }

    @FUZZ
    @given(route=st.sampled_from(sorted(routes)), data=st.data())
    def refused(route, data):
        metadata = data.draw(metadata_without_the_token(protected_worker.token))
        answer = invoke(protected_worker.channel, route.split()[0], routes[route], metadata)
        check(answer, {SC.UNAUTHENTICATED}, f"{route} with a file-writing payload and metadata {metadata}")
        assert not evidence.exists(), f"{route} without the token unpickled its payload"

    refused()
    protected_worker.assert_intact()
    for route in ("Call naming the blob", "CallBatch"):
        answer = invoke(protected_worker.channel, route.split()[0], routes[route], protected_worker.metadata)
        check(answer, {SC.OK}, f"the control: {route} with the token")
        assert evidence.exists(), f"control: {route} with the token should have unpickled the payload"
        evidence.unlink()


def test_an_upload_without_the_token_stores_nothing(protected_worker, json_bundle):
    """A real bundle sent without the token is refused and never reaches the worker's cache."""

    @FUZZ
    @given(data=st.data())
    def refused(data):
        metadata = data.draw(metadata_without_the_token(protected_worker.token))
        chunks = chunk_bytes(json_bundle.id, len(json_bundle.data), [json_bundle.data])
        check(invoke(protected_worker.channel, "PutBundle", chunks, metadata), {SC.UNAUTHENTICATED},
              f"PutBundle with metadata {metadata}")

    refused()
    assert json_bundle.id not in protected_worker.describe().bundles
    assert not (protected_worker.cache_dir / "bundles" / (json_bundle.id[7:] + ".zip")).exists()
    protected_worker.assert_intact()


# -- regressions: bugs this fuzzing found, fixed in turbolift --------------------------

# Was: BundleStore.put checked only the hash, so any bytes were stored under their true id; load then
# let zipfile.BadZipFile, zlib.error (corrupt data) and AttributeError/TypeError (a manifest that is not
# a JSON object of the expected shape) escape instead of raising BundleError, and every later
# Call/CallBatch of that id answers UNKNOWN "Exception calling application: File is not a zip file".


def call_content(worker: FuzzedWorker, content: bytes) -> Answer:
    """Upload ``content`` under its true id, then call a function in it.

    A worker may refuse the content at upload (INVALID_ARGUMENT) or when it
    opens it (FAILED_PRECONDITION); either is a clear answer.
    """
    chunks = chunk_bytes(sha256_id(content), len(content), [content])
    uploaded = check(invoke(worker.channel, "PutBundle", chunks), {SC.OK, SC.INVALID_ARGUMENT},
                     "PutBundle of junk content")
    if uploaded.code != SC.OK:
        return uploaded
    return invoke(worker.channel, "Call", call_body(sha256_id(content), "mod", "f", arguments()))


def manifest_bytes(**fields: Any) -> bytes:
    return json.dumps({"format": _bundle.FORMAT, **_bundle.python_tag(), "requirements": {}, "modules": {},
                       "installed": [], "pickled": {}, **fields}).encode()


def corrupt_zip() -> bytes:
    data = bytearray(zip_of({_bundle.MANIFEST: manifest_bytes(), "mod.py": "def f():\n    return 1\n" * 50}))
    data[60] ^= 0xFF  # inside the compressed data of the first entry: an inflate or CRC error
    return bytes(data)


@pytest.mark.parametrize("content", [
    pytest.param(b"this is not a zip archive at all", id="not-a-zip"),
    pytest.param(corrupt_zip(), id="corrupt-zip"),
    pytest.param(zip_of({_bundle.MANIFEST: b"[1, 2, 3]"}), id="manifest-is-a-list"),
    pytest.param(zip_of({_bundle.MANIFEST: manifest_bytes(requirements=["x"])}), id="requirements-a-list"),
    pytest.param(zip_of({_bundle.MANIFEST: manifest_bytes(sources=5)}), id="sources-a-number"),
])
def test_a_bundle_with_unreadable_content_under_its_true_id_gets_a_clear_status(scratch_worker, content):
    """Content that hashes to its id but is no usable bundle: INVALID_ARGUMENT or FAILED_PRECONDITION."""
    check(call_content(scratch_worker, content), {SC.INVALID_ARGUMENT, SC.FAILED_PRECONDITION},
          "a call into an unreadable bundle")
    scratch_worker.assert_intact()


def test_any_bundle_content_under_its_true_id_gets_a_clear_status(scratch_worker):
    """Fuzz: random bytes, and zips holding random manifests, uploaded under their true ids."""
    fields = st.sampled_from(["format", "python", "implementation", "modules", "requirements", "installed",
                              "pickled", "sources"])
    documents = plain_data | st.dictionaries(fields, plain_data)
    manifests = st.binary(max_size=64) | documents.map(lambda value: json.dumps(value, default=repr).encode())

    @FUZZ
    @given(content=st.binary(max_size=2048) | manifests.map(lambda m: zip_of({_bundle.MANIFEST: m})))
    def clear(content):
        check(call_content(scratch_worker, content),
              {SC.INVALID_ARGUMENT, SC.FAILED_PRECONDITION, SC.NOT_FOUND, SC.OK}, "a call into a junk bundle")

    clear()
    scratch_worker.assert_intact()


# WorkerService._function catches Exception, not BaseException: a module that raises SystemExit or
# KeyboardInterrupt at import (say, top-level argparse failing on the worker's argv) lets it escape
# the handler; gRPC's handler wrapper catches only Exception, so the RPC is never completed and the
# caller waits until its deadline -- forever without one.
def test_a_module_that_exits_when_imported_gets_a_clear_status_not_silence(scratch_worker, project):
    """Resolving a function whose module raises SystemExit at import: an answer within seconds."""
    bundle = _bundle._module_bundle(EXITS)
    check(upload(scratch_worker.channel, bundle), {SC.OK}, "uploading the module that exits")
    started = time.monotonic()
    answer = invoke(scratch_worker.channel, "Call", call_body(bundle.id, EXITS, "never", arguments()),
                    timeout=2.0)
    waited = time.monotonic() - started
    check(answer, {SC.FAILED_PRECONDITION}, f"Call into a module that exits (answered after {waited:.1f}s)")
    scratch_worker.assert_intact()


# WorkerService.Call checks and unpacks the argument pair outside any try: a tuple subclass (from a
# bundle) whose iteration raises answers UNKNOWN "Exception calling application: ...".
def test_arguments_that_unpickle_to_an_unruly_tuple_get_a_clear_status(open_worker, target_bundle, project):
    """A tuple subclass from the bundle that refuses iteration, as the whole argument pair."""
    payload = pickle.dumps(project.StubbornTuple(((), {})))
    answer = invoke(open_worker.channel, "Call", call_body(target_bundle.id, TARGET, "echo", payload))
    check(answer, {SC.INVALID_ARGUMENT, SC.OK}, "Call with a StubbornTuple argument pair")
    open_worker.assert_intact()


# _bundle_store.BUNDLE_ID ends in `$`, which also matches before a trailing newline: check_id accepts
# "sha256:<64 hex>\n", so a call answers BUNDLE_MISSING (and the cache path it probes ends in a newline).
@pytest.mark.parametrize("method", ["Call", "CallBatch"])
def test_a_bundle_id_with_a_trailing_newline_is_malformed(open_worker, target_bundle, method):
    """'sha256:<hex>\\n' is not a bundle id, even when <hex> is one the worker holds."""
    bundle_id = target_bundle.id + "\n"
    body = (call_body(bundle_id, TARGET, "echo", arguments(7)) if method == "Call"
            else batch_body(bundle_id, TARGET, "echo", _serialize.dumps([(7,)], for_worker=True), 1))
    answer = check(invoke(open_worker.channel, method, body), {SC.FAILED_PRECONDITION},
                   f"{method} with bundle id {bundle_id!r}")
    assert "malformed bundle id" in answer.details


# _blobs.assemble preallocates bytearray(declared size) -- zero-filled, hence committed -- before a
# byte of data arrives. Measured here: a PutBlob declaring MAX_BLOB (8 GiB) and sending one byte took
# the worker to VmRSS 8.4 GB for ~20 s before INVALID_ARGUMENT "the blob ended after 1 of its declared
# 8,589,934,592 bytes"; a few such uploads at once exhaust the host. This test declares 512 MiB.
def test_a_blob_upload_that_declares_much_and_sends_little_costs_little_memory(scratch_worker):
    """Declare 512 MiB, send one byte: refused, and the worker's peak RSS does not follow the claim."""
    declared = 512 * 2**20
    before = proc_status(scratch_worker.server_pid, "VmHWM")
    answer = invoke(scratch_worker.channel, "PutBlob", blob_chunks(declared, [b"x"]))
    check(answer, {SC.INVALID_ARGUMENT}, "PutBlob declaring 512 MiB and sending 1 byte")
    growth = proc_status(scratch_worker.server_pid, "VmHWM") - before
    assert growth < RSS_GROWTH_LIMIT, (
        f"declaring {declared:,} bytes and sending 1 raised the worker's peak RSS by {growth // 2**20} MiB")
