"""``vlparse quickstart``: draw a scene world, pre-train a tiny model (Visual Parsing, or FIBER
with ``--model fiber``), report held-out metrics."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command, add_overrides

EXAMPLES = """examples:
  vlparse quickstart
  vlparse quickstart --model fiber --out qs-fiber
  vlparse quickstart --out qs --images 2000 train.max_steps=300"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    q = add_command(sub, "quickstart",
                    "draw a scene world, pre-train the tiny model, report held-out metrics",
                    EXAMPLES)
    q.add_argument("--model", choices=("visual_parsing", "fiber"), default="visual_parsing",
                   help="the model family: the Visual Parsing model (the 'quickstart' config) "
                   "or FIBER ('fiber_quickstart')")
    q.add_argument("--out", default=None,
                   help="output folder (default: vlparse-quickstart, vlparse-quickstart-fiber)")
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
    if args.model == "fiber":
        from vlparse.quickstart_fiber import run_fiber_quickstart as run_quickstart
    else:
        from vlparse.quickstart import run_quickstart
    out = args.out or ("vlparse-quickstart-fiber" if args.model == "fiber"
                       else "vlparse-quickstart")
    run_quickstart(out, args.images, args.seed, args.overrides, args.workers,
                   args.vqa_steps, processes=args.processes, prune_vocab=not args.full_vocab)
