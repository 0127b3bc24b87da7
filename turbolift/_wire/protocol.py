"""Names and limits of the wire contract (``proto/turbolift/v1/worker.proto``).

Pure constants, so that either side (and the Kubernetes manifests, which
name the health service in their probes) can use them without gRPC.
"""
from __future__ import annotations

SERVICE_NAME = "turbolift.v1.Worker"
# gRPC's own ceiling for one message; large payloads never come near it
# because they travel in chunks (see turbolift._wire.chunked).
MESSAGE_LIMIT = 2**31 - 1
# Version of the Session protocol (Hello/Challenge carry it): what a worker understands.
SESSION_VERSION = 2
# From this version on workers read Invoke.single_arguments (callers send older workers argument tuples).
SINGLE_ARGUMENTS_VERSION = 2
# Payload bytes per Chunk frame; a payload up to this size travels inside its frame.
FRAME_DATA = 4 * 1024 * 1024
# What a worker accepts in one message: a frame of FRAME_DATA plus its envelope.
# Anything bigger is refused by gRPC before it is read, authenticated or not.
WORKER_RECEIVE_LIMIT = FRAME_DATA + 64 * 1024
# What a caller accepts in one message from a worker (frames are FRAME_DATA at most).
CALLER_RECEIVE_LIMIT = 64 * 1024 * 1024
