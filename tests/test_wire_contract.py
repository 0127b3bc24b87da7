"""The generated gRPC code matches proto/ exactly (regenerate with `tox -e proto`)."""
from __future__ import annotations

import os
from pathlib import Path

from turbolift import Workers, _runtime, on
from turbolift._enabling import switch
from turbolift._wire import protogen as _protogen

PACKAGE = Path(_protogen.__file__).resolve().parent.parent


def test_generated_code_has_not_drifted_from_the_proto(tmp_path):
    generated = _protogen.generate(tmp_path)
    assert generated, "protoc produced nothing"
    for path in generated:
        committed = PACKAGE / "v1" / path.name
        assert committed.exists(), f"{path.name} is not committed; run `tox -e proto`"
        assert committed.read_bytes() == path.read_bytes(), (
            f"turbolift/v1/{path.name} differs from what proto/ generates; run `tox -e proto`")


def test_a_session_handshakes_then_describes_and_the_unary_describe_agrees(start_worker):
    import grpc

    from turbolift._caller.session import Stream
    from turbolift._wire.auth import discovered_token
    from turbolift.v1 import worker_pb2 as pb
    from turbolift.v1 import worker_pb2_grpc as pb_grpc

    worker = start_worker()
    with grpc.insecure_channel(worker.address) as channel:
        stream = Stream(channel, worker.address)
        stream.handshake(discovered_token(worker.address))   # the token it made for its user
        described = stream.describe()
        stream.close()
        unary = pb_grpc.WorkerStub(channel).Describe(pb.DescribeRequest(), timeout=10,
                                                     metadata=worker.metadata)
    assert described.pid == unary.pid and described.worker_id == unary.worker_id
    assert stream.slots == described.slots == 16
    # The server runs in a child of the restarting supervisor we started.
    with open(f"/proc/{described.pid}/stat") as handle:
        assert int(handle.read().rsplit(")", 1)[1].split()[1]) == worker.process.pid
    assert described.implementation == "cpython"


# Makes a worker process one of an older turbolift: Session version 1, and blind to
# Invoke.single_arguments (it reads every batch as argument tuples, as those workers do).
OLDER_WORKER = """
import turbolift._wire.protocol as protocol
protocol.SESSION_VERSION = 1
import turbolift._worker.execution as execution
_batch = execution.batch
def _blind(watchdog, ticket, function, payload, count, with_kwargs, events=None, single_arguments=False):
    return _batch(watchdog, ticket, function, payload, count, with_kwargs, events, False)
execution.batch = _blind
"""


def identity(value):
    return value


def test_a_worker_of_an_older_session_version_gets_a_maps_items_as_argument_tuples(start_worker, tmp_path):
    older = tmp_path / "older"
    older.mkdir()
    (older / "sitecustomize.py").write_text(OLDER_WORKER)
    worker = start_worker(env={"PYTHONPATH": os.pathsep.join(filter(None, [str(older),
                                                                           os.environ.get("PYTHONPATH")]))})
    with worker.session() as stream:
        assert stream.version == 1   # what the caller goes by
    switch.enable(Workers(worker.address))
    try:
        f = on()(identity)
        items = [(1, 2), [3], None, "ab", (4,), ()]
        assert list(f.map(items)) == items
        assert list(f.map(range(2000))) == list(range(2000))
        assert list(f.map([b"x" * 5_000_000] * 2)) == [b"x" * 5_000_000] * 2   # (chunked batches too)
    finally:
        _runtime.disable()
