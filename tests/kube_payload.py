"""Functions the Kubernetes tests run on pods (standard library only: small bundles, any image)."""
import os
import socket
import time


def where(seconds: float = 0.0) -> str:
    """The pod a call ran on: containers get their pod's name as HOSTNAME."""
    time.sleep(seconds)
    return os.environ.get("HOSTNAME") or socket.gethostname()


def square(x: int) -> int:
    return x * x
