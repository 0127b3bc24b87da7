"""A token-protected worker refuses calls without the token before unpickling."""
from __future__ import annotations

import pickle
import subprocess
import sys

import grpc
import pytest
from conftest import child_env

from turbolift import Workers, _runtime, on
from turbolift._enabling import switch
from turbolift.errors import ClusterError
from turbolift.v1 import worker_pb2 as pb
from turbolift.v1 import worker_pb2_grpc as pb_grpc


class WritesFileWhenUnpickled:
    """Unpickling this calls open(path, "w"): the file's existence is the proof."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def triple(x):
    return 3 * x


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret-token-value\n")
    return path


@pytest.fixture
def protected(start_worker, token_file):
    return start_worker(token_file=token_file)


@pytest.fixture
def distributed(protected, token_file):
    switch.enable(Workers(protected.address, token_file=str(token_file)))
    yield protected
    _runtime.disable()


def _session_call(address, token, bundle_id, payload):
    """Open a Session, answer the worker's challenge as if holding ``token`` (None: a guessed proof),
    send one Invoke of ``triple`` with the raw ``payload``; return the first answering frame."""
    from turbolift._caller.session import Stream
    from turbolift._wire import handshake
    from turbolift._wire.protocol import SESSION_VERSION

    with grpc.insecure_channel(address) as channel:
        stream = Stream(channel, address)
        mine = handshake.nonce()
        stream.send(pb.ClientFrame(hello=pb.Hello(nonce=mine, version=SESSION_VERSION)))
        challenge = stream.receive().challenge
        proof = handshake.caller_proof(token, mine, challenge.nonce) if token else b"guess" * 8
        stream.send(pb.ClientFrame(proof=pb.Proof(proof=proof)))
        ref = pb.FunctionRef(bundle_id=bundle_id, module="test_token_auth", qualname="triple")
        stream.send(pb.ClientFrame(invoke=pb.Invoke(function=ref, arguments=payload, call_id="t")))
        try:
            return stream.receive()
        finally:
            stream.close()


def test_calls_with_the_token_work(distributed):
    assert on()(triple)(5) == 15


def test_without_the_token_the_payload_is_never_unpickled(distributed, tmp_path):
    f = on()(triple)
    assert f(1) == 3  # the bundle is now on the worker
    bundle_id = f._remote._resolve()[2].bundle_id
    evidence = tmp_path / "unpickled-evidence"
    payload = pickle.dumps(((WritesFileWhenUnpickled(str(evidence)),), {}))

    wrong = [(), (("authorization", "Bearer wrong-token"),), (("authorization", "s3cret-token-value"),)]
    for metadata in wrong:
        with grpc.insecure_channel(distributed.address) as channel:  # the unary method checks metadata
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.WorkerStub(channel).Describe(pb.DescribeRequest(), metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "token" in info.value.details()
    for token in [None, "wrong-token", "s3cret-token-value\n"]:   # a Session must prove it in its handshake
        with pytest.raises(grpc.RpcError) as info:
            _session_call(distributed.address, token, bundle_id, payload)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "token" in info.value.details()
        assert not evidence.exists()

    # Control: with the token the very same payload is unpickled by the worker,
    # so the absence of the file above is the handshake's doing.
    reply = _session_call(distributed.address, "s3cret-token-value", bundle_id, payload)
    assert reply.WhichOneof("frame") == "reply"
    assert evidence.exists()


def test_health_stays_open_for_probes(protected):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(protected.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_caller_without_the_token_gets_a_clear_error(protected):
    switch.enable(f"grpc://{protected.address}")
    try:
        with pytest.raises(ClusterError, match="token"):
            on()(triple)(2)
    finally:
        _runtime.disable()


def test_non_loopback_listen_without_token_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "turbolift", "worker", "--listen", "0.0.0.0:0",
                          "--cache-dir", str(tmp_path)], env=child_env(tmp_path), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode != 0
    assert "refusing to listen on 0.0.0.0:0 without authentication" in out.stderr
    assert "--token-file" in out.stderr
