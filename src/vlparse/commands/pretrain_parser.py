"""``vlparse pretrain-parser``: the offline stand-in for ImageNet weights of the visual parser."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command, add_overrides, load_cli_config

EXAMPLES = """examples:
  vlparse pretrain-parser --config tiny --out parser.safetensors
  vlparse pretrain-parser --config tiny --out p.safetensors --steps 300 --images 1000
  vlparse pretrain --config tiny --data world/manifest.json --out runs/tiny \\
      model.visual.pretrained=parser.safetensors
(the stand-in for ImageNet weights: a multi-label colour/shape classification of scenes drawn
with their own seed; writes the weights and a JSON report beside them)"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    pp = add_command(
        sub, "pretrain-parser",
        "pre-train the visual parser on scene attributes (offline stand-in for ImageNet weights)",
        EXAMPLES,
    )
    pp.add_argument("--config", default="tiny", help="model config whose parser is trained")
    pp.add_argument("--out", required=True, help="weights file (.safetensors); a .json beside it")
    # defaults (None): those of ParserPretrainConfig, the run that made the shipped weights
    pp.add_argument("--images", type=int, help="scenes drawn (last 10%% held out)")
    pp.add_argument("--seed", type=int, help="scene and initialisation seed")
    pp.add_argument("--steps", type=int)
    pp.add_argument("--batch-size", type=int)
    pp.add_argument("--lr", type=float)
    pp.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_overrides(pp)
    pp.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from dataclasses import replace
    from pathlib import Path

    from vlparse.tasks.parser_pretrain import ParserPretrainConfig, pretrain_parser

    cfg = load_cli_config(args.config, args.overrides)
    given = {"images": args.images, "seed": args.seed, "steps": args.steps,
             "batch_size": args.batch_size, "lr": args.lr}
    settings = replace(ParserPretrainConfig(), **{k: v for k, v in given.items() if v is not None})
    settings = replace(settings, val_images=max(1, settings.images // 10))
    report = pretrain_parser(cfg.model.visual, args.out, settings, progress=not args.no_progress)
    before, after = report["held_out_before"], report["held_out_after"]
    for group in ("color", "shape", "background", "pair"):
        key = f"{group}_acc"
        print(f"held-out {key:14s} {before[key]:.3f} -> {after[key]:.3f} "
              f"(constant answer {after[group + '_prior_acc']:.3f})")
    report_path = Path(args.out).with_suffix(".json")
    print(f"wrote {args.out} and {report_path} ({report['wall_s']:.0f} s)")
