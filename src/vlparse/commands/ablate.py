"""``vlparse ablate``: the paper's Table 5 ablation on the user's data."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command, add_manifest, add_overrides
from vlparse.config import FINETUNE_TASKS

EXAMPLES = """examples:
  vlparse ablate --data world/manifest.json --out ablation --seeds 3 \\
      --pretrain-steps 1000 --finetune-steps 500
  vlparse ablate --data world/manifest.json --out abl_tiny --tiny --seeds 2 \\
      --pretrain-steps 20 --finetune-steps 20 --rows swin_mfr,patch
  vlparse ablate --data m.json --out abl --rows swin_nomfr,swin_mfr train.batch_size=128 \\
      finetune.train.batch_size=128
rows: r50, r101, swin_nomfr, swin_randmfr, swin_mfr (the paper's Table 5) and patch (ViLT-style
32x32 patch projection). key=value overrides change the pre-training config of every row;
finetune.key=value the fine-tuning recipe. --tiny: the tiny base config with CPU-sized rows
(resnet10t / resnet18 for R50 / R101, 16-px patches). Run the same command again to resume; the
experiment's arguments are stored in OUT/ablation.json and a re-run with others fails.
--units DIR keeps one file per finished (row, seed) unit in DIR (e.g. a committed folder): units
found there are not run again, even in a fresh OUT, and --max-units N runs at most N missing
ones, so that the table grows over several short runs:
  vlparse ablate --data world/manifest.json --out abl --units reports/DATE-table5-ablation/units \
      --max-units 1"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    ab = add_command(sub, "ablate", "the paper's Table 5 ablation (CNN / Swin / patch embedders, "
                     "MFR variants) on your data: pre-train, fine-tune, probe each row over "
                     "seeds; table, JSON and plot", EXAMPLES)
    add_manifest(ab)
    ab.add_argument("--out", required=True, help="folder for runs/, table5.{md,json,png}")
    ab.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row (default 3)")
    ab.add_argument("--pretrain-steps", type=int, default=1000, help="pre-training steps per run")
    ab.add_argument("--finetune-steps", type=int, default=500, help="fine-tuning steps per run")
    ab.add_argument("--rows", default=None, help="comma-separated rows (default: all six)")
    ab.add_argument("--base-config", default=None, help="pre-training config the rows modify "
                    "(default: ablation, or tiny with --tiny)")
    ab.add_argument("--finetune-config", default=None, help="fine-tuning recipe (default: "
                    "TASK_world, e.g. vqa_world)")
    ab.add_argument("--task", default="vqa", choices=FINETUNE_TASKS, help="fine-tuning task")
    ab.add_argument("--tiny", action="store_true", help="CPU-sized rows on the tiny config")
    ab.add_argument("--probe-samples", type=int, default=300, help="held-out pairs for F^{1,L}")
    ab.add_argument("--no-progress", action="store_true", help="no per-step progress bars")
    ab.add_argument("--overwrite", action="store_true", help="OUT holds an ablation with other "
                    "arguments: move it aside to OUT.replaced-<time> and start anew")
    ab.add_argument("--units", default=None, help="folder of unit files (<row>-seed<k>.json): "
                    "units there are taken, not run; new ones are written there")
    ab.add_argument("--units-out", default=None, help="write new unit files here instead of "
                    "--units (units there count as done too)")
    ab.add_argument("--max-units", type=int, default=None, help="run at most N missing units "
                    "(0: only rebuild the table from the unit files)")
    add_overrides(ab)
    ab.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from vlparse.tasks.ablation import run_ablation

    run_ablation(
        args.data, args.out, rows=args.rows.split(",") if args.rows else None, seeds=args.seeds,
        pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
        base_config=args.base_config, finetune_config=args.finetune_config, task=args.task,
        overrides=args.overrides, tiny=args.tiny, probe_samples=args.probe_samples,
        progress=not args.no_progress, overwrite=args.overwrite, units=args.units,
        units_out=args.units_out, max_units=args.max_units,
    )
    print(f"wrote {args.out}/table5.md, table5.json and table5.png")
