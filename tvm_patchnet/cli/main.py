"""``patchnet``: the command line. One module per subcommand; user errors become one line on
stderr and exit code 2 here, and only here. Heavy imports (TVM, torch) happen inside the
subcommands, so ``patchnet --help`` is instant."""

from __future__ import annotations

import argparse
import sys

from ..errors import PatchnetError
from . import compile as compile_cmd
from . import micro as micro_cmd
from . import profile as profile_cmd
from . import run as run_cmd

_COMMANDS = [profile_cmd, compile_cmd, run_cmd, micro_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchnet",
        description="MCUNetV2 patch-based inference on Apache TVM: analyse, patch, compile and run int8 CNNs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in _COMMANDS:
        cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.drive(args) or 0)
    except PatchnetError as e:
        if args.verbose:
            raise
        print(f"patchnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"patchnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
