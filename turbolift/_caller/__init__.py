"""The caller side: what happens to a call of a marked function in the caller.

``client`` binds marked functions to stubs and owns the clusters started;
``stub`` turns a call into a :class:`calls.Call`; ``dispatcher`` picks a
worker, sends, retries and recovers (``asynchronous`` for futures);
``connection`` is one channel to one worker; ``coalesce`` batches
concurrent submits and ``mapping`` is ``map``; ``bundling`` and
``projects`` build the bundles a worker needs; ``failures`` maps gRPC
statuses to the errors a user sees. Nothing here imports the worker side.
"""
