"""The generated gRPC code matches proto/ exactly (regenerate with `tox -e proto`)."""
from __future__ import annotations

from pathlib import Path

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
