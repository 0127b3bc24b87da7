"""TLS and mutual TLS with grpc's own credentials, certificates made by the test."""
from __future__ import annotations

import shutil
import subprocess
import sys

import grpc
import pytest
from conftest import child_env

from turbolift import TLS, ClusterError, ConfigurationError, WorkerLost, Workers, _runtime, on
from turbolift._enabling import switch
from turbolift.v1 import worker_pb2 as pb
from turbolift.v1 import worker_pb2_grpc as pb_grpc

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def triple(x):
    return 3 * x


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throw-away CA, a server certificate for 127.0.0.1, and a client certificate."""
    root = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=turbolift test CA", cwd=root)
    for name, extension in [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                            ("client", "extendedKeyUsage=clientAuth")]:
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                 cwd=root)
        (root / f"{name}.ext").write_text(extension + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=root)
    # A second CA the worker does not trust, with its own client certificate.
    _openssl("req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2",
             "-subj", "/CN=rogue", cwd=root)
    return root


@pytest.fixture
def tls_worker(start_worker, pki):
    def start(mutual: bool):
        args = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
        if mutual:
            args += ["--tls-ca", str(pki / "ca.pem")]
        return start_worker(extra_args=tuple(args))
    return start


def _call_with(cluster):
    switch.enable(cluster)
    try:
        return on(retries=0)(triple)(4)
    finally:
        _runtime.disable()


def test_tls_worker_serves_a_tls_client(tls_worker, pki):
    worker = tls_worker(mutual=False)
    assert _call_with(Workers(worker.address, tls=TLS(ca=str(pki / "ca.pem")))) == 12
    assert _call_with(f"grpcs://{worker.address}?ca={pki / 'ca.pem'}") == 12


def test_tls_worker_refuses_a_plaintext_client(tls_worker):
    worker = tls_worker(mutual=False)
    with grpc.insecure_channel(worker.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.WorkerStub(channel).Describe(pb.DescribeRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises((WorkerLost, ClusterError)):
        _call_with(Workers(worker.address, ready_timeout=2))


def test_mutual_tls_requires_a_client_certificate_from_the_trusted_ca(tls_worker, pki):
    worker = tls_worker(mutual=True)
    ca = str(pki / "ca.pem")
    assert _call_with(Workers(worker.address, tls=TLS(ca=ca, cert=str(pki / "client.pem"),
                                                      key=str(pki / "client.key")))) == 12
    for client in [TLS(ca=ca), TLS(ca=ca, cert=str(pki / "rogue.pem"), key=str(pki / "rogue.key"))]:
        with pytest.raises(ClusterError, match="did not become healthy"):
            _call_with(Workers(worker.address, tls=client, ready_timeout=3))


def test_off_loopback_a_worker_needs_a_token_or_mutual_tls(tmp_path, pki):
    from turbolift._worker.server import check_exposure

    server_only = TLS(cert=str(pki / "server.pem"), key=str(pki / "server.key"))
    with pytest.raises(ConfigurationError, match="mutual TLS"):
        check_exposure("0.0.0.0:50051", None, server_only)
    check_exposure("0.0.0.0:50051", "a-token", server_only)
    check_exposure("0.0.0.0:50051", None, TLS(ca=str(pki / "ca.pem"), cert=str(pki / "server.pem"),
                                              key=str(pki / "server.key")))
    check_exposure("127.0.0.1:50051", None, None)
    out = subprocess.run([sys.executable, "-m", "turbolift", "worker", "--listen", "0.0.0.0:0",
                          "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                          "--cache-dir", str(tmp_path)], env=child_env(tmp_path), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode != 0 and "refusing to listen on 0.0.0.0:0" in out.stderr
