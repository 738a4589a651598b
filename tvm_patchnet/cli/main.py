"""``patchnet``: the command line. One module per subcommand; user errors become one line on
stderr and exit code 2 here, and only here; SIGINT / SIGTERM end with "interrupted" /
"terminated" and exit code 130 / 143 after every temp folder and child process is gone. Heavy imports (TVM, torch) happen inside the
subcommands, so ``patchnet --help`` is instant."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .. import progress
from ..errors import PatchnetError
from . import compile as compile_cmd
from . import micro as micro_cmd
from . import profile as profile_cmd
from . import run as run_cmd
from . import tune as tune_cmd

_COMMANDS = [profile_cmd, compile_cmd, tune_cmd, run_cmd, micro_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchnet",
        description="MCUNetV2 patch-based inference on Apache TVM: analyse, patch, compile and run int8 CNNs.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"patchnet {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in _COMMANDS:
        cmd.add_parser(sub)
    _add_global_flags(parser)
    parser.set_defaults(verbose=False, quiet=False)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """-v and -q on ``parser`` and every subcommand under it, so they work anywhere on the line
    (``patchnet -v compile ...`` and ``patchnet compile ... -v``). SUPPRESS: a subcommand that
    does not see the flag leaves the value an earlier level set."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress and no warnings: results and errors only")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                _add_global_flags(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet:
        import warnings

        warnings.simplefilter("ignore")
    else:
        progress.enable()
    received: list[int] = []
    previous = _catch_signals(received)
    try:
        return int(args.drive(args) or 0)
    except BaseException as e:  # every way out is decided here, and only here
        if received or isinstance(e, KeyboardInterrupt):
            # whatever surfaced (TVM turns a signal inside its C++ code into a RuntimeError): the
            # temp folders and child processes are gone by now (context managers unwound)
            sig = received[0] if received else signal.SIGINT
            print(f"patchnet {args.command}: {'terminated' if sig == signal.SIGTERM else 'interrupted'}",
                  file=sys.stderr)
            return 128 + sig
        if isinstance(e, BrokenPipeError):  # output piped into head & co.
            sys.stderr.close()
            return 0
        if isinstance(e, PatchnetError) and not args.verbose:
            print(f"patchnet {args.command}: error: {_printable(str(e))}", file=sys.stderr)
            return 2
        raise
    finally:
        progress.disable()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _catch_signals(received: list[int]) -> dict:
    """SIGINT and SIGTERM raise KeyboardInterrupt where the program is, so every ``with`` block
    cleans up (temp folders, board sessions, make's process group) and no partial output stays.
    Later signals are ignored while that cleanup runs. Returns the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(sig, _frame):
        received.append(sig)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, on_signal)
    return previous


def _printable(text: str) -> str:
    """An error message with control characters (from an archive's names, a compiler's output)
    shown as escapes, so nothing reaches the terminal as a command sequence; newlines stay."""
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


if __name__ == "__main__":
    sys.exit(main())
