"""``vlparse finetune TASK``: fine-tune on a downstream task."""

from __future__ import annotations

import argparse

from vlparse.commands._common import (
    add_command,
    add_manifest,
    add_training_run,
    claim_out,
    load_cli_config,
)
from vlparse.config import FINETUNE_TASKS

EXAMPLES = """examples:
  vlparse finetune retrieval --data world/manifest.json --init runs/tiny --out ft/ret \\
      --config retrieval_world
  vlparse finetune retrieval --data /data/manifest.json --init runs/paper --out ft/flickr
  vlparse finetune retrieval --data m.json --out ft/scratch --config retrieval_world train.epochs=2
  vlparse finetune vqa --data m.json --init runs/tiny --out ft/vqa --config vqa_world --resume
  vlparse finetune refexp --data m.json --init runs/fine --out ft/refexp --config refexp_world
  vlparse finetune caption --data m.json --init runs/fiber_tiny --out ft/cap --config caption_world
recipes (--config; default: the task's paper recipe): retrieval, vqa, nlvr2, snli_ve, caption,
grounding, refexp, detection and their *_world versions for the scene world on a CPU, or a YAML
file."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parent = add_command(sub, "finetune",
                         "fine-tune on a downstream task (" + ", ".join(FINETUNE_TASKS) + ")",
                         EXAMPLES)
    tasks = parent.add_subparsers(dest="task", metavar="TASK")
    for name in FINETUNE_TASKS:  # one sub-parser per task: key=value may follow options
        ft = add_command(tasks, name, f"fine-tune for {name}", EXAMPLES)
        add_manifest(ft)
        ft.add_argument("--init", default=None, help="the model to start from: a run folder, "
                        "a checkpoint or a saved model folder such as RUN/model (default: "
                        "random initialisation)")
        ft.add_argument("--config", default=None, help="recipe name or YAML (default: the task's)")
        add_training_run(ft, "skip the validation evaluation")
        ft.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from vlparse.tasks.base import get_task
    from vlparse.tasks.finetune import run_finetune

    task = get_task(args.task)  # fails early for tasks not implemented yet
    cfg = load_cli_config(args.config or task.recipe, args.overrides, finetune=True)
    claim_out(args)
    summary = run_finetune(args.task, cfg, args.data, args.out, init=args.init,
                           resume=args.resume, evaluate=not args.no_eval,
                           overwrite=args.overwrite)
    print(f"wrote {args.out}/summary.json (validation: {summary['val']})")
