"""``vlparse evaluate TASK``: evaluate a fine-tuned run on one split; metrics as JSON."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command, add_manifest
from vlparse.config import FINETUNE_TASKS

EXAMPLES = """examples:
  vlparse evaluate retrieval --checkpoint ft/flickr --data /data/manifest.json --split test \\
      --out ft/flickr/test.json
  vlparse evaluate retrieval --checkpoint ft/flickr --data m.json --split test --out r.json \\
      --rerank-k 128
  vlparse evaluate retrieval --checkpoint runs/paper --data m.json --split test --out zs.json
  vlparse evaluate caption --checkpoint ft/cap --data m.json --split test --out cap.json --beams 1
(the third one: zero-shot retrieval of a pre-training run with its ITM head; the last one writes
cap.json and the COCO results file cap_captions.json, greedy decoding)"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = add_command(sub, "evaluate", "evaluate a fine-tuned run on one split; metrics as JSON",
                     EXAMPLES)
    ev.add_argument("task", choices=FINETUNE_TASKS, metavar="TASK",
                    help=", ".join(FINETUNE_TASKS))
    ev.add_argument("--checkpoint", required=True, help="the fine-tuned model: its run folder, a "
                    "checkpoint or a saved model folder such as RUN/model")
    add_manifest(ev)
    ev.add_argument("--split", required=True, help="split to evaluate, e.g. test, val, dev")
    ev.add_argument("--out", required=True, help="JSON file for the metrics")
    ev.add_argument("--dataset", default=None,
                    help="manifest data set (default: the run's data.val_set)")
    ev.add_argument("--rerank-k", type=int, default=None, help="retrieval in two stages: "
                    "rank every pair by the model's cheap shortlist score (FIBER: its ITC "
                    "similarity), then score only each query's top K with the full model "
                    "(FIBER: ITM); the others rank last (default: the full model scores "
                    "every pair)")
    ev.add_argument("--batch-pairs", type=int, default=None, help="pairs per forward pass")
    ev.add_argument("--beams", type=int, default=None, help="caption: beams of the beam search "
                    "(1 = greedy; default: the run's task.num_beams)")
    ev.add_argument("--workers", type=int, default=None, help="image loading processes "
                    "(default: the run's data.num_workers)")
    ev.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")
    ev.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import json

    from vlparse.tasks.finetune import run_evaluate

    overrides = []
    if args.rerank_k is not None:
        overrides.append(f"task.rerank_k={args.rerank_k}")
    if args.batch_pairs is not None:
        overrides.append(f"task.eval_batch_pairs={args.batch_pairs}")
    if args.beams is not None:
        overrides.append(f"task.num_beams={args.beams}")
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    result = run_evaluate(args.task, args.checkpoint, args.data, args.split, args.out,
                          dataset=args.dataset, overrides=overrides, device=args.device,
                          progress=not args.no_progress)
    print(json.dumps(result, indent=2))
