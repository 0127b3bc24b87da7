"""The worker side: a generic gRPC server that runs calls from shipped bundles.

``session`` answers a caller's Session stream (its calls run in ``execution``),
``server`` starts and stops the gRPC server, ``bundle_store`` keeps bundles
on disk and imports them, ``requirements`` pins environments, ``cancel``
interrupts abandoned calls, ``supervisor`` restarts a server killed by user
code, ``launcher`` starts worker processes (for the platforms and the
supervisor) and ``command`` is ``turbolift worker``. Nothing here imports
the caller side. Importing this package imports nothing else: ``launcher``
is loaded by ``import turbolift`` and must stay free of gRPC.
"""
