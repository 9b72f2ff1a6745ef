"""``vlparse info``: print a config, the model's size and the environment."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command, add_overrides

EXAMPLES = """examples:
  vlparse info
  vlparse info --config paper
  vlparse info --config ablation model.visual.kind=patch model.visual.patch_size=32"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    i = add_command(sub, "info", "print a config, the model's size and the environment", EXAMPLES)
    i.add_argument("--config", default="tiny", help="built-in name or YAML")
    add_overrides(i)
    i.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import torch
    import yaml

    from vlparse.commands._common import load_cli_config
    from vlparse.config import to_dict
    from vlparse.models.flops import format_model_info
    from vlparse.models.registry import create_model

    cfg = load_cli_config(args.config, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        model = create_model(cfg.model)
    n_all = sum(p.numel() for p in model.parameters())
    print(f"multi-modal model: {n_all / 1e6:.1f} M parameters in all")
    if cfg.model.family == "fiber":
        from vlparse.models.fiber.info import format_fiber_info

        print(format_fiber_info(model))
    else:
        print(format_model_info(cfg))
