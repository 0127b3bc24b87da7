"""Command line: ``python -m turbolift`` and ``turbolift``.

::

    python -m turbolift [options] SCRIPT [ARGS...]     run a script distributed
    python -m turbolift [options] -m MODULE [ARGS...]  run a module distributed
    turbolift worker --listen HOST:PORT [--token-file F]  a generic worker
    turbolift install-hook [--print] | uninstall-hook   switch on with TURBOLIFT=1
    turbolift bundle SCRIPT | -m MODULE                 show what would be shipped

Options of the run form: ``--cluster URL``, ``--workers N``,
``--remote MODULE:QUALNAME`` (repeatable), ``--timeout SECONDS``,
``--token-file FILE``; each may also come from the environment or project
files (see :mod:`turbolift._config`). Everything after the script or module belongs to the
program, exactly as if it had been started with ``python``.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

SUBCOMMANDS = ("run", "worker")
_RUN_VALUE_OPTIONS = {"--cluster", "--workers", "--remote", "--timeout", "--token-file", "--retries"}


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m turbolift",
        usage="python -m turbolift [options] (SCRIPT | -m MODULE) [ARGS...]\n"
              "       turbolift worker --listen HOST:PORT [--token-file FILE] [--tls-cert ...]\n"
              "       turbolift install-hook [--print] | uninstall-hook\n"
              "       turbolift bundle (SCRIPT | -m MODULE) [--json]\n"
              "       turbolift kube (manifests | cleanup) ...",
        description="Run a Python program with its marked functions on workers. Each subcommand "
                    "has its own --help.")
    parser.add_argument("--cluster", help="cluster URL: local, local:N, grpc://host:port,..., "
                        "grpcs://host:port?ca=FILE or k8s://NAMESPACE?image=IMAGE "
                        "(default: $TURBOLIFT_CLUSTER, configuration, or local)")
    parser.add_argument("--workers", type=int, help="number of local workers (default: one per CPU)")
    parser.add_argument("--remote", action="append", default=[], metavar="MODULE:QUALNAME",
                        help="also distribute this undecorated function (repeatable)")
    parser.add_argument("--timeout", type=float, help="default per-call deadline in seconds")
    parser.add_argument("--retries", type=int, help="retries of a call whose worker was lost (default 2)")
    parser.add_argument("--token-file", help="token for grpc:// workers (default: $TURBOLIFT_TOKEN_FILE)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def _split_run_args(argv: Sequence[str]) -> tuple[list[str], Optional[str], Optional[str], list[str]]:
    """Split into (turbolift options, script, module, program args)."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "-m":
            if index + 1 >= len(argv):
                raise SystemExit("python -m turbolift: -m needs a module name")
            return list(argv[:index]), None, argv[index + 1], list(argv[index + 2:])
        if arg in _RUN_VALUE_OPTIONS:
            index += 2
            continue
        if arg.startswith("-"):
            index += 1
            continue
        return list(argv[:index]), arg, None, list(argv[index + 1:])
    return list(argv), None, None, []


def _terminate(signum: int, frame: object) -> None:
    # Unwind normally so that the cluster is torn down by `finally`/atexit.
    raise SystemExit(128 + signum)


def run(argv: Sequence[str]) -> int:
    options, script, module, program_args = _split_run_args(argv)
    opts = _run_parser().parse_args(options)
    if opts.version:
        from . import __version__

        print(f"turbolift {__version__}")
        return 0
    if script is None and module is None:
        _run_parser().print_usage(sys.stderr)
        print("python -m turbolift: give a script or -m MODULE to run", file=sys.stderr)
        return 2
    from . import _config, _hook, _runtime, _site
    from .errors import TurboliftError

    start = Path(script).resolve().parent if script is not None else Path.cwd()
    if threading_is_main():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            settings = _config.load(vars(opts), start)
            _site.activate(settings, eager=True)  # workers boot while the program loads
            _hook.prepare_main(script, module, program_args)
        except TurboliftError as exc:  # a bad setting or a cluster that cannot start
            print(f"python -m turbolift: {exc}", file=sys.stderr)
            return 2
        _hook.run_main(script, module)
    finally:
        _runtime.shutdown()
    return 0


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def worker(argv: Sequence[str]) -> int:
    from .platforms import default_cache_dir

    parser = argparse.ArgumentParser(prog="turbolift worker",
                                     description="Serve turbolift calls from shipped bundles.")
    parser.add_argument("--listen", default="127.0.0.1:50051",
                        help="HOST:PORT or unix:PATH (default 127.0.0.1:50051; port 0 picks a free one)")
    parser.add_argument("--token-file", help="require this token from callers (needed off loopback)")
    parser.add_argument("--cache-dir", default=None, help="bundle cache (default: ~/.cache/turbolift)")
    parser.add_argument("--threads", type=int, default=16, help="concurrent calls served")
    parser.add_argument("--worker-id", help="name reported by Describe")
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tls-cert", help="serve TLS with this PEM certificate (with --tls-key)")
    parser.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    parser.add_argument("--tls-ca", help="require client certificates signed by this CA (mutual TLS)")
    parser.add_argument("--no-restart", action="store_true",
                        help="serve in this process; do not restart the server when user code kills it")
    parser.add_argument("--previous-exit", help=argparse.SUPPRESS)
    parser.add_argument("--install-requirements", action="store_true",
                        help="pip-install a bundle's pinned requirements into the cache "
                        "instead of refusing the bundle")
    opts = parser.parse_args(argv)
    if not opts.no_restart:
        from . import _nanny

        # The supervisor appends its own --listen (the port it fixed), which
        # argparse lets override the one among ``argv``.
        return _nanny.supervise(list(argv), opts.listen)
    tls = None
    if opts.tls_cert or opts.tls_key or opts.tls_ca:
        from ._tls import TLS

        tls = TLS(ca=opts.tls_ca, cert=opts.tls_cert, key=opts.tls_key)
    token = None
    if opts.token_file:
        from .platforms import _read_token

        token = _read_token(None, opts.token_file)
    from . import _worker

    return _worker.main(opts.listen, opts.cache_dir or default_cache_dir(), token, opts.token_stdin,
                        opts.ready_fd, opts.exit_with_stdin, opts.threads, opts.worker_id,
                        opts.install_requirements, opts.previous_exit, tls)


def hook_command(name: str, argv: Sequence[str]) -> int:
    from . import _site

    parser = argparse.ArgumentParser(prog=f"turbolift {name}", description=(
        "Install a .pth file so that any Python started with TURBOLIFT=1 runs distributed."
        if name == "install-hook" else "Remove the .pth file written by install-hook."))
    if name == "install-hook":
        parser.add_argument("--print", action="store_true", dest="print_only",
                            help="show what would be written, and where, without writing")
    opts = parser.parse_args(argv)
    if name == "install-hook":
        return _site.install_hook(opts.print_only)
    return _site.uninstall_hook()


def bundle_command(argv: Sequence[str]) -> int:
    """``turbolift bundle SCRIPT | -m MODULE``: show what would be shipped."""
    from . import _bundle

    parser = argparse.ArgumentParser(prog="turbolift bundle",
                                     description="Show the bundle a module or script would ship.")
    parser.add_argument("script", nargs="?", help="a script: its imports are shipped (it is not run)")
    parser.add_argument("-m", dest="module", help="a module: shipped as workers receive it")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    opts = parser.parse_args(argv)
    if (opts.script is None) == (opts.module is None):
        parser.error("give exactly one of SCRIPT or -m MODULE")
    if opts.module:
        sys.path.insert(0, str(Path.cwd()))
        bundle = _bundle.bundle_for_module(opts.module)
    else:
        sys.path.insert(0, str(Path(opts.script).resolve().parent))
        bundle = _bundle.bundle_for_script(opts.script)
    report = _bundle.describe(bundle)
    if opts.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"bundle {report['id']}  ({report['size']:,} bytes zipped)")
    print(f"python {report['python']} ({report['implementation']})")
    print("files:")
    for name, size in report["files"]:
        print(f"  {size:>10,}  {name}")
    print("pinned requirements:" if report["requirements"] else "pinned requirements: none")
    for dist, version in report["requirements"].items():
        print(f"  {dist}=={version}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "worker":
        return worker(args[1:])
    if args and args[0] == "kube":
        from . import _kube_cli

        return _kube_cli.main(args[1:])
    if args and args[0] in ("install-hook", "uninstall-hook"):
        return hook_command(args[0], args[1:])
    if args and args[0] == "bundle":
        return bundle_command(args[1:])
    if args and args[0] == "run":
        args = args[1:]
    return run(args)
