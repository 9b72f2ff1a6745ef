"""``vlparse quickstart``: draw a scene world, pre-train the tiny model, report held-out metrics."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command, add_overrides

EXAMPLES = """examples:
  vlparse quickstart
  vlparse quickstart --out qs --images 2000 train.max_steps=300"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    q = add_command(sub, "quickstart",
                    "draw a scene world, pre-train the tiny model, report held-out metrics",
                    EXAMPLES)
    q.add_argument("--out", default="vlparse-quickstart", help="output folder")
    q.add_argument("--images", type=int, default=3000, help="scene world size")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=None, help="processes drawing the world")
    q.add_argument("--vqa-steps", type=int, default=200,
                   help="VQA fine-tuning steps at the end (0: skip)")
    q.add_argument("--processes", type=int, default=None,
                   help="pre-training processes (default: 2 on a CPU machine with 2+ cores, "
                   "else 1)")
    q.add_argument("--full-vocab", action="store_true",
                   help="keep the tokenizer's whole vocabulary (default: prune it to the "
                   "world's texts)")
    add_overrides(q)
    q.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from vlparse.quickstart import run_quickstart

    run_quickstart(args.out, args.images, args.seed, args.overrides, args.workers,
                   args.vqa_steps, processes=args.processes, prune_vocab=not args.full_vocab)
