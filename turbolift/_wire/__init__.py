"""The wire: what a caller and a worker share, and nothing else.

The service name and message limits, the serialiser, how replies and
exceptions are packed and unpacked, chunked payloads, the bundle format,
authentication and TLS settings. Nothing here imports the caller side, the
worker side or the platforms; both sides import this.
"""
