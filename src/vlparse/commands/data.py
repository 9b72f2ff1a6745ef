"""``vlparse data synth``: draw the built-in scene world in the official formats."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command

EXAMPLES = """examples:
  vlparse data synth --out world --images 2000 --seed 0
  vlparse data synth --out big --images 20000 --workers 16 --image-size 256"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    s = add_command(dsub, "synth", "draw the built-in scene world in the official formats",
                    EXAMPLES)
    s.add_argument("--out", required=True)
    s.add_argument("--images", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from vlparse.data.synthetic import generate

    path = generate(args.out, args.images, seed=args.seed, image_size=args.image_size,
                    workers=args.workers)
    print(f"wrote {path}")
