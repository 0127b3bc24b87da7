"""Command line: ``python -m turbolift`` and ``turbolift``.

::

    python -m turbolift [options] SCRIPT [ARGS...]     run a script distributed
    python -m turbolift [options] -m MODULE [ARGS...]  run a module distributed
    turbolift worker --listen HOST:PORT [--token-file F]  a generic worker
    turbolift install-hook [--print] | uninstall-hook   switch on with TURBOLIFT=1
    turbolift bundle SCRIPT | -m MODULE                 show what would be shipped
    turbolift kube (manifests | cleanup) ...            Kubernetes objects

Options of the run form: ``--cluster URL``, ``--workers N``,
``--remote MODULE:QUALNAME`` (repeatable), ``--timeout SECONDS``,
``--retries N``, ``--token-file FILE``; each may also come from the
environment or project files (see :mod:`turbolift._enabling.config`).
Everything after the script or module belongs to the program, exactly as if
it had been started with ``python``. Each subcommand lives with its part;
this module only dispatches.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

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
        from ._version import __version__

        print(f"turbolift {__version__}")
        return 0
    if script is None and module is None:
        _run_parser().print_usage(sys.stderr)
        print("python -m turbolift: give a script or -m MODULE to run", file=sys.stderr)
        return 2
    from . import _runtime
    from ._enabling import config, main, switch
    from .errors import TurboliftError

    start = Path(script).resolve().parent if script is not None else Path.cwd()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            settings = config.load(vars(opts), start)
            switch.activate(settings, eager=True)  # workers boot while the program loads
            main.prepare_main(script, module, program_args)
        except TurboliftError as exc:  # a bad setting or a cluster that cannot start
            print(f"python -m turbolift: {exc}", file=sys.stderr)
            return 2
        try:
            main.run_main(script, module)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # What `python app.py` prints: the program's frames, not turbolift's and runpy's.
            trimmed = main.user_frames(exc.__traceback__)
            sys.excepthook(type(exc), exc.with_traceback(trimmed), trimmed)
            return 1
    finally:
        _runtime.shutdown()
    return 0


def _hook_command(name: str, argv: Sequence[str]) -> int:
    from ._enabling import site

    parser = argparse.ArgumentParser(prog=f"turbolift {name}", description=(
        "Install a .pth file so that any Python started with TURBOLIFT=1 runs distributed."
        if name == "install-hook" else "Remove the .pth file written by install-hook."))
    if name == "install-hook":
        parser.add_argument("--print", action="store_true", dest="print_only",
                            help="show what would be written, and where, without writing")
    opts = parser.parse_args(list(argv))
    if name == "install-hook":
        return site.install_hook(opts.print_only)
    return site.uninstall_hook()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else None
    if command == "worker":
        from ._worker import command as worker_command

        return worker_command.main(args[1:])
    if command == "kube":
        from .platforms.kubernetes import command as kube_command

        return kube_command.main(args[1:])
    if command in ("install-hook", "uninstall-hook"):
        return _hook_command(command, args[1:])
    if command == "bundle":
        from ._caller import report

        return report.main(args[1:])
    if command == "run":
        args = args[1:]
    return run(args)
