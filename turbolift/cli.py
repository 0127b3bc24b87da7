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
import os
import signal
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Callable, Optional, Sequence

_RUN_VALUE_OPTIONS = {"--cluster", "--workers", "--remote", "--timeout", "--token-file", "--retries"}

SUBCOMMANDS = """\
subcommands (each has its own --help):
  worker         serve calls: a generic worker (turbolift worker --listen HOST:PORT)
  status         every worker of a cluster: calls, bundles, memory (--json, --watch)
  bundle         show what would be shipped for a script or module, without running it
  trace          run a program locally and report what distributing it would cost
  install-hook   switch on with TURBOLIFT=1 for any Python (uninstall-hook: switch off)
  kube           Kubernetes manifests of a worker deployment, and cleanup
"""


def program_name() -> str:
    """The program as it was invoked: ``turbolift`` (the console script) or ``python -m turbolift``."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "turbolift" if invoked.startswith("turbolift") and not invoked.endswith(".py") \
        else "python -m turbolift"


def _at_least(minimum: float, kind: type, flag: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be at least {minimum:g}, not {text}")
        return value
    return parse


def _run_parser() -> argparse.ArgumentParser:
    name = program_name()
    parser = argparse.ArgumentParser(
        prog=name,
        usage=f"{name} [options] (SCRIPT | -m MODULE) [ARGS...]\n"
              f"       {name} SUBCOMMAND ...",
        description="Run a Python program with its marked functions on workers.",
        epilog=SUBCOMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", nargs="?", metavar="SCRIPT", help="the program to run, as `python SCRIPT`")
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as `python -m MODULE`")
    parser.add_argument("args", nargs="*", metavar="ARGS", help="the program's own arguments (sys.argv[1:])")
    parser.add_argument("--cluster", help="cluster URL: local, local:N, grpc://host:port,..., "
                        "grpcs://host:port?ca=FILE or k8s://NAMESPACE?image=IMAGE "
                        "(default: $TURBOLIFT_CLUSTER, configuration, or local)")
    parser.add_argument("--workers", type=_at_least(1, int, "--workers"),
                        help="number of local workers (default: one per CPU)")
    parser.add_argument("--remote", action="append", default=[], metavar="MODULE:QUALNAME",
                        help="also distribute this undecorated function (repeatable)")
    parser.add_argument("--timeout", type=_at_least(0, float, "--timeout"),
                        help="default per-call deadline in seconds")
    parser.add_argument("--retries", type=_at_least(0, int, "--retries"),
                        help="retries of a call whose worker was lost (default 2)")
    parser.add_argument("--token-file", help="token for grpc:// workers (default: $TURBOLIFT_TOKEN_FILE)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what happens (cluster, uploads, first calls, retries) on stderr; -vv: more")
    parser.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    return parser


def _set_verbosity(level: int) -> None:
    """-v: turbolift's own log records on stderr. Without it, turbolift stays silent even when the
    program's logging shows INFO records."""
    import logging

    logger = logging.getLogger("turbolift")
    if level <= 0:
        logger.setLevel(logging.WARNING)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("turbolift: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if level == 1 else logging.DEBUG)
    logger.propagate = False


def _split_run_args(argv: Sequence[str], value_options: frozenset = frozenset(_RUN_VALUE_OPTIONS),
                    ) -> tuple[list[str], Optional[str], Optional[str], list[str]]:
    """Split into (turbolift options, script, module, program args)."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "-m":
            if index + 1 >= len(argv):
                raise SystemExit("python -m turbolift: -m needs a module name")
            return list(argv[:index]), None, argv[index + 1], list(argv[index + 2:])
        if arg in value_options:
            index += 2
            continue
        if arg.startswith("-"):
            index += 1
            continue
        return list(argv[:index]), arg, None, list(argv[index + 1:])
    return list(argv), None, None, []


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends the program as it would without turbolift: the cluster is torn down, then the
    process dies of the signal (status 143 in a shell, -15 to ``subprocess``).

    Raising ``SystemExit`` instead would be caught by whatever runs (pytest records a failed test and
    carries on). The teardown runs in its own thread with a bound: the interrupted main thread may
    hold a lock the teardown needs, and the workers also exit by themselves when this process is gone.
    """
    from . import _runtime

    stopper = threading.Thread(target=_runtime.shutdown, name="turbolift-sigterm", daemon=True)
    stopper.start()
    stopper.join(10)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _untrap_sigterm() -> None:
    """In a forked child (multiprocessing), SIGTERM kills at once, as it would without turbolift:
    the child owns no cluster, and the handler could not run while gRPC's threads take the signal."""
    if signal.getsignal(signal.SIGTERM) is _terminate:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:  # (only a main thread may set handlers)
            pass


def run(argv: Sequence[str]) -> int:
    options, script, module, program_args = _split_run_args(argv)
    # Only the options are parsed: everything from SCRIPT on is the program's, untouched.
    opts = _run_parser().parse_args(options)
    if opts.version:
        from ._version import __version__

        print(f"turbolift {__version__}")
        return 0
    if script is None and module is None:
        _run_parser().print_usage(sys.stderr)
        print(f"{program_name()}: give a script or -m MODULE to run", file=sys.stderr)
        return 2
    from . import _runtime
    from ._enabling import config, switch
    from .errors import ClusterError, ConfigurationError, TurboliftError

    start = Path(script).resolve().parent if script is not None else Path.cwd()
    process_ends_here = threading.current_thread() is threading.main_thread()
    if process_ends_here:
        signal.signal(signal.SIGTERM, _terminate)
        os.register_at_fork(after_in_child=_untrap_sigterm)
    try:
        try:
            settings = config.load(vars(opts), start)
            switch.activate(settings, eager=True)  # workers boot while the program loads
            # (Imported after the workers' start: they need none of it.)
            _set_verbosity(opts.verbose)
            from ._enabling import main

            main.prepare_main(script, module, program_args)
        except TurboliftError as exc:  # a bad setting or a cluster that cannot start
            print(f"{program_name()}: {exc}", file=sys.stderr)
            return 2
        try:
            main.run_main(script, module)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            if process_ends_here:   # left to the interpreter, which prints it and dies of SIGINT
                _show_program_frames_when_uncaught(module is not None)
            raise
        except (ClusterError, ConfigurationError) as exc:
            # Not the program's error but the cluster's: one line that says what to do.
            print(f"{program_name()}: {exc}", file=sys.stderr)
            return 1
        except BaseException as exc:
            _show_uncaught(exc, module is not None)
            return 1
    finally:
        # Where the process ends with the program, its clusters stop as plain python's exit goes on
        # (the exit handler registered when distribution was switched on): after the program's other
        # threads have ended and after its own exit handlers, which may still call marked functions.
        client = _runtime.client()
        if not process_ends_here:
            _runtime.shutdown()
        elif client is not None:
            client.wait_loaded()
    return 0


def _show_uncaught(exc: BaseException, as_module: bool = False) -> None:
    """What `python app.py` prints for an uncaught exception: the program's frames, not turbolift's
    and runpy's; and what it leaves for the program's exit handlers (``sys.last_value`` ...)."""
    from ._enabling import main

    trimmed = main.user_frames(exc.__traceback__, as_module)
    if trimmed is exc.__traceback__ and isinstance(exc, SyntaxError):
        trimmed = None   # the script itself does not compile: python shows no frame, only the line
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, trimmed
    if hasattr(sys, "last_exc"):   # (3.12)
        sys.last_exc = exc
    _report(sys.excepthook, exc, trimmed)


def _report(hook: Callable, exc: BaseException, trimmed: Optional[TracebackType]) -> None:
    """``hook`` shows ``exc`` with the traceback ``trimmed`` (the one printed is the exception's own);
    a hook that raises is reported as the interpreter reports it, without this function's frame."""
    try:
        hook(type(exc), exc.with_traceback(trimmed), trimmed)
    except BaseException as broken:
        print("Error in sys.excepthook:", file=sys.stderr)
        broken.__context__ = None   # (it was raised while the program's exception was handled here)
        hook_frames = broken.__traceback__.tb_next
        sys.__excepthook__(type(broken), broken.with_traceback(hook_frames), hook_frames)
        print("\nOriginal exception was:", file=sys.stderr)
        sys.__excepthook__(type(exc), exc, trimmed)


def _show_program_frames_when_uncaught(as_module: bool) -> None:
    """The exception being raised reaches the interpreter's top level: its traceback is shown, by
    whatever ``sys.excepthook`` is now, without the frames of turbolift and runpy above the program."""
    from ._enabling import main

    shown = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Optional[TracebackType]) -> None:
        sys.excepthook = shown
        _report(shown, value, main.without_caller_tail(main.user_frames(tb, as_module)))

    sys.excepthook = hook


def trace(argv: Sequence[str]) -> int:
    """``turbolift trace [--json] (SCRIPT | -m MODULE) [ARGS...]``: a dry run (see _caller.trace)."""
    options, script, module, program_args = _split_run_args(
        argv, frozenset({"--call-overhead-ms", "--megabytes-per-second"}))
    parser = argparse.ArgumentParser(
        prog="turbolift trace", usage="turbolift trace [options] (SCRIPT | -m MODULE) [ARGS...]",
        description="Run a program locally, and report for each marked function its calls, the bundle "
                    "that would ship, argument and result sizes, time per call and the estimated time "
                    "distributed. Nothing is deployed. The report goes to stderr.")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--call-overhead-ms", type=_at_least(0, float, "--call-overhead-ms"),
                        help="cost of one remote call (default: this machine's benchmark figure)")
    parser.add_argument("--megabytes-per-second", type=_at_least(0.001, float, "--megabytes-per-second"),
                        help="transfer rate of arguments and results (default: the benchmark's)")
    opts = parser.parse_args(options)
    if script is None and module is None:
        parser.print_usage(sys.stderr)
        print("turbolift trace: give a script or -m MODULE to run", file=sys.stderr)
        return 2
    from . import _runtime
    from ._caller import trace as tracing
    from ._enabling import main
    from ._settings import Settings
    from .errors import TurboliftError

    overhead = tracing.CALL_OVERHEAD_SECONDS if opts.call_overhead_ms is None else opts.call_overhead_ms / 1e3
    rate = tracing.BYTES_PER_SECOND if opts.megabytes_per_second is None else opts.megabytes_per_second * 1e6
    client = tracing.TraceClient(Settings())
    _runtime.enable(client)
    status = 0
    try:
        try:
            main.prepare_main(script, module, program_args)
        except TurboliftError as exc:
            print(f"turbolift trace: {exc}", file=sys.stderr)
            return 2
        try:
            main.run_main(script, module)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:
            _show_uncaught(exc, module is not None)
            status = 1
        tracing.print_report(client, overhead, rate, opts.json)
    finally:
        _runtime.disable()
    return status


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
    if command == "trace":
        return trace(args[1:])
    if command == "status":
        from ._caller import status

        return status.main(args[1:])
    if command == "run":
        args = args[1:]
    return run(args)
