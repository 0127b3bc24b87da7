"""``turbolift worker``: serve calls from shipped bundles.

Without ``--no-restart`` the server runs under a supervisor that restarts
it when user code kills its process; the supervisor starts this same
command with ``--no-restart`` for each server process.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .._wire import grpc_import
from .._wire.auth import read_token
from .._wire.tls import TLS
from ..errors import TurboliftError
from . import template, tokens
from .exposure import is_loopback
from .launcher import default_cache_dir
from .template import TEMPLATE_OPTION


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve turbolift calls from shipped bundles.")
    parser.add_argument("--listen", default="127.0.0.1:50051",
                        help="HOST:PORT or unix:PATH (default 127.0.0.1:50051; port 0 picks a free one)")
    parser.add_argument("--token-file", help="require the token in this file from callers (default: a token "
                        "made for this worker, which callers of the same user find on their own)")
    parser.add_argument("--allow-any-local-user", action="store_true",
                        help="on loopback, require no token: every local user may then run code as this "
                        "worker's user")
    parser.add_argument("--cache-dir", default=None, help="bundle cache (default: ~/.cache/turbolift)")
    parser.add_argument("--threads", type=int, default=16, help="calls of user code run at once")
    parser.add_argument("--workdir", help="the working directory calls run in (default: the one the worker "
                        "starts in); the worker never imports from it")
    parser.add_argument("--worker-id", help="name reported by Describe")
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(TEMPLATE_OPTION, type=int, dest="template_fd", help=argparse.SUPPRESS)
    parser.add_argument("--tls-cert", help="serve TLS with this PEM certificate (with --tls-key)")
    parser.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    parser.add_argument("--tls-ca", help="require client certificates signed by this CA (mutual TLS)")
    parser.add_argument("--no-restart", action="store_true",
                        help="serve in this process; do not restart the server when user code kills it")
    parser.add_argument("--previous-exit", help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics over HTTP on this port "
                        "(0 picks one), on the --listen host (needs turbolift[metrics])")
    parser.add_argument("--install-requirements", action="store_true",
                        help="pip-install a bundle's pinned requirements into the cache "
                        "instead of refusing the bundle")
    return parser


def main(argv: Sequence[str], prog: str = "turbolift worker") -> int:
    opts = _parser(prog).parse_args(list(argv))
    if opts.template_fd is not None:
        return _template(opts.template_fd, prog)
    try:
        if not opts.no_restart:
            from .supervisor import supervise

            # The supervisor appends its own --listen (the port it fixed), which
            # argparse lets override the one among ``argv``.
            return supervise(list(argv), opts.listen, make_token=needs_own_token(opts))
        if opts.token_file:
            read_token(None, opts.token_file)  # an empty or unreadable file stops the worker here
        return _serve(opts)
    except TurboliftError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


def _template(control_fd: int, prog: str) -> int:
    """Be a template (see :mod:`.template`): import what a worker imports, then fork workers; a
    forked child returns here with its own arguments and runs as the worker they describe."""
    grpc_import.import_grpc()   # (its fork handlers off: in the template, whose workers inherit them)
    from . import server  # noqa: F401  (imported once here, for every worker forked below)

    args = template.serve(control_fd)
    if args is None:
        return 0
    # As a worker started on its own would see them (ps still shows the template's command line).
    sys.argv = [sys.argv[0], "worker", *args]
    sys.orig_argv = template.worker_command(args)
    return main(args, prog)


def needs_own_token(opts: argparse.Namespace) -> bool:
    """True when no token was given and the worker must make one (see turbolift._worker.tokens)."""
    # Mutual TLS authenticates callers by their certificates; a private unix
    # socket by the file system. Beyond loopback a token file must be given
    # (it is to be copied to other hosts): check_exposure says so.
    return is_loopback(opts.listen) and not (
        opts.token_file or opts.token_stdin or opts.allow_any_local_user or opts.tls_ca
        or tokens.private_unix_socket(opts.listen))


def _serve(opts: argparse.Namespace) -> int:
    grpc_import.import_grpc()   # (its fork handlers off, while the worker has one thread)
    from .server import WorkerOptions, run

    tls: Optional[TLS] = None
    if opts.tls_cert or opts.tls_key or opts.tls_ca:
        tls = TLS(ca=opts.tls_ca, cert=opts.tls_cert, key=opts.tls_key)
    token = read_token(None, opts.token_file) if opts.token_file else None
    if opts.token_stdin:
        token = sys.stdin.buffer.readline().decode().strip() or None
    made = needs_own_token(opts)
    if made:
        token = tokens.new_token()
    # (absolute: the worker may change its working directory, see --workdir)
    cache_dir = os.path.abspath(opts.cache_dir or default_cache_dir())
    options = WorkerOptions(listen=opts.listen, cache_dir=cache_dir, token=token, workdir=opts.workdir,
                            threads=opts.threads, worker_id=opts.worker_id,
                            install_requirements=opts.install_requirements, previous_exit=opts.previous_exit,
                            tls=tls, metrics_port=opts.metrics_port)
    return run(options, ready_fd=opts.ready_fd, exit_with_stdin=opts.exit_with_stdin, publish_token=made)
