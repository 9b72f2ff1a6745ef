"""``vlparse pretrain``: pre-train on the caption data sets of a manifest."""

from __future__ import annotations

import argparse

from vlparse.commands._common import (
    add_command,
    add_manifest,
    add_training_run,
    claim_out,
    load_cli_config,
)

EXAMPLES = """examples:
  vlparse pretrain --config tiny --data world/manifest.json --out runs/tiny
  vlparse pretrain --config paper --data /data/manifest.json --out runs/paper train.batch_size=1024
  vlparse pretrain --config paper --data /data/manifest.json --out runs/paper --resume
  vlparse pretrain --config tiny --data world/manifest.json --out runs/tiny --overwrite
  vlparse pretrain --config fiber_fine_tiny --data world/manifest.json --out runs/fine \
      --init runs/fiber_tiny
  torchrun --nproc_per_node 8 -m vlparse pretrain --config paper --data m.json --out runs/p"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "pretrain", "pre-train on the caption data sets of a manifest", EXAMPLES)
    p.add_argument("--config", required=True, help="built-in name (tiny, ablation, paper) or YAML")
    add_manifest(p)
    p.add_argument("--init", default=None, metavar="RUN",
                   help="start FIBER's fine-grained stage (objectives.stage=fine) from this "
                        "coarse-grained run or saved model")
    add_training_run(p, "skip the held-out evaluation")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from vlparse.tasks.pretrain import run_pretrain

    cfg = load_cli_config(args.config, args.overrides)
    claim_out(args)
    run_pretrain(cfg, args.data, args.out, resume=args.resume, evaluate=not args.no_eval,
                 init=args.init)
