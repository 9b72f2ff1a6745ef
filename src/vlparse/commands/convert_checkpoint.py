"""``vlparse convert-checkpoint``: convert old-format checkpoints (a pickled ``state.pt``) that
you trust to the format read without unpickling."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command

EXAMPLES = """examples:
  vlparse convert-checkpoint runs/old --trust
  vlparse convert-checkpoint runs/old/checkpoints/step_00001000 --trust
Converting reads state.pt with pickle, which runs any code the file carries: convert only a run
you made yourself or got from someone you trust. Afterwards state.pt is gone and --resume works."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = add_command(sub, "convert-checkpoint",
                    "convert trusted old-format checkpoints (state.pt) to the pickle-free format",
                    EXAMPLES)
    c.add_argument("path", help="run folder, its checkpoints folder, or one step folder")
    c.add_argument("--trust", action="store_true",
                   help="required: you trust the files (they are unpickled)")
    c.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from vlparse.errors import CheckpointError
    from vlparse.io.checkpoint import convert_legacy_checkpoint

    if not args.trust:
        raise CheckpointError(args.path, "converting unpickles state.pt, which runs any code it "
                              "carries; pass --trust if you trust where it comes from")
    converted = convert_legacy_checkpoint(args.path)
    if not converted:
        raise CheckpointError(args.path, "holds no old-format checkpoint (state.pt)")
    for folder in converted:
        print(f"converted {folder}")
