"""Names and limits of the wire contract (``proto/turbolift/v1/worker.proto``).

Pure constants, so that either side (and the Kubernetes manifests, which
name the health service in their probes) can use them without gRPC.
"""
from __future__ import annotations

SERVICE_NAME = "turbolift.v1.Worker"
# gRPC's own ceiling for one message; large payloads never come near it
# because they travel in chunks (see turbolift._wire.blobs).
MESSAGE_LIMIT = 2**31 - 1
# Trailing metadata key that carries an EnvironmentMismatch's differences (JSON).
DIFFERENCES_KEY = "turbolift-differences"
