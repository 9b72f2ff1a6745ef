"""The ``vlparse`` command line: wires the commands of :mod:`vlparse.commands` (one module each,
every one with ``--help`` examples).

Error contract: an error the user can cause and fix (a :class:`~vlparse.errors.VlparseError`,
or a missing file) is printed as one line ``vlparse: error: ...`` on stderr with exit status 2,
like argparse's own usage errors; anything else is a bug and surfaces as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vlparse.commands import COMMANDS
from vlparse.commands.probe import build_probe_masks_parser
from vlparse.errors import VlparseError

__all__ = ["build_parser", "build_probe_masks_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlparse",
        description="Vision-language pre-training with a self-attention visual parser.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["probe", "masks"]:  # sub-command of probe; `probe --checkpoint` stays as is
        parser = build_probe_masks_parser()
        args = parser.parse_args(argv[2:])
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
    if args.version:
        from vlparse import __version__

        print(__version__)
        return 0
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return run(args) or 0
    except (VlparseError, FileNotFoundError) as e:
        print(f"vlparse: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
