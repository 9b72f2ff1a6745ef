"""The ``vlparse`` command line. Every command has ``--help`` with examples."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vlparse.config import FINETUNE_TASKS as FINETUNE_TASK_NAMES
from vlparse.errors import BadDataError, BadImageError, ConfigError, DataFormatError, ManifestError

EXAMPLES = {
    "quickstart": """examples:
  vlparse quickstart
  vlparse quickstart --out /tmp/qs --images 2000 train.max_steps=300""",
    "pretrain": """examples:
  vlparse pretrain --config tiny --data world/manifest.json --out runs/tiny
  vlparse pretrain --config paper --data /data/manifest.json --out runs/paper train.batch_size=1024
  vlparse pretrain --config paper --data /data/manifest.json --out runs/paper --resume
  torchrun --nproc_per_node 8 -m vlparse.cli pretrain --config paper --data m.json --out runs/p""",
    "pretrain-parser": """examples:
  vlparse pretrain-parser --config tiny --out parser.safetensors
  vlparse pretrain-parser --config tiny --out p.safetensors --steps 300 --images 1000
  vlparse pretrain --config tiny --data world/manifest.json --out runs/tiny \\
      model.visual.pretrained=parser.safetensors
(the stand-in for ImageNet weights: a multi-label colour/shape classification of scenes drawn
with their own seed; writes the weights and a JSON report beside them)""",
    "synth": """examples:
  vlparse data synth --out world --images 2000 --seed 0
  vlparse data synth --out big --images 20000 --workers 16 --image-size 256""",
    "finetune": """examples:
  vlparse finetune retrieval --data world/manifest.json --init runs/tiny --out ft/ret \\
      --config retrieval_world
  vlparse finetune retrieval --data /data/manifest.json --init runs/paper --out ft/flickr
  vlparse finetune retrieval --data m.json --out ft/scratch --config retrieval_world train.epochs=2
recipes (--config; default: the task's paper recipe): retrieval, vqa, nlvr2, snli_ve and their
*_world versions for the scene world on a CPU, or a YAML file.""",
    "evaluate": """examples:
  vlparse evaluate retrieval --checkpoint ft/flickr --data /data/manifest.json --split test \\
      --out ft/flickr/test.json
  vlparse evaluate retrieval --checkpoint ft/flickr --data m.json --split test --out r.json \\
      --rerank-k 128
  vlparse evaluate retrieval --checkpoint runs/paper --data m.json --split test --out zs.json
(the last one: zero-shot retrieval of a pre-training run with its ITM head)""",
    "probe": """examples:
  vlparse probe --checkpoint runs/tiny --data world/manifest.json --out probe/tiny
  vlparse probe --checkpoint runs/a --label MFR --checkpoint runs/b --label no-MFR \\
      --data world/manifest.json --out probe/ablation --num-samples 500
  vlparse probe --checkpoint runs/a/checkpoints/step_00001000 --data m.json --out probe/s1000
  vlparse probe masks --checkpoint runs/tiny --data world/manifest.json --out probe/tiny --images 8
  (vlparse probe masks --help: the attention-guided MFR mask figure, paper Figure 2)""",
    "probe masks": """examples:
  vlparse probe masks --checkpoint runs/tiny --data world/manifest.json --out probe/tiny --images 8
  vlparse probe masks --checkpoint runs/a/checkpoints/step_00001000 --data m.json --out figs \
      --images 4 --dataset coco --split val --seed 1 --no-attention-map""",
    "ablate": """examples:
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
experiment's arguments are stored in OUT/ablation.json and a re-run with others fails.""",
}


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. train.batch_size=32 objectives.mfr_mode=random",
    )


def _add_manifest(p: argparse.ArgumentParser) -> None:
    """``--data``: the manifest every data-reading command takes."""
    p.add_argument("--data", required=True, help="manifest.json naming the data files")


def _add_training_run(p: argparse.ArgumentParser, resume_help: str, eval_help: str) -> None:
    """``--resume``, ``--no-eval`` and the ``key=value`` overrides of a training command."""
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--no-eval", action="store_true", help=eval_help)
    _add_overrides(p)


def _add_command(
    sub: argparse._SubParsersAction, name: str, help: str, examples: str | None = None
) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with ``EXAMPLES[examples or name]``."""
    return sub.add_parser(
        name,
        help=help,
        epilog=EXAMPLES[examples or name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlparse",
        description="Vision-language pre-training with a self-attention visual parser.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    q = _add_command(
        sub, "quickstart", "draw a scene world, pre-train the tiny model, report held-out metrics"
    )
    q.add_argument("--out", default="vlparse-quickstart", help="output folder")
    q.add_argument("--images", type=int, default=3000, help="scene world size")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=None, help="processes drawing the world")
    q.add_argument(
        "--vqa-steps", type=int, default=200, help="VQA fine-tuning steps at the end (0: skip)"
    )
    q.add_argument(
        "--processes", type=int, default=None,
        help="pre-training processes (default: 2 on a CPU machine with 2+ cores, else 1)",
    )
    q.add_argument(
        "--full-vocab", action="store_true",
        help="keep the tokenizer's whole vocabulary (default: prune it to the world's texts)",
    )
    _add_overrides(q)

    p = _add_command(sub, "pretrain", "pre-train on the caption data sets of a manifest")
    p.add_argument("--config", required=True, help="built-in name (tiny, ablation, paper) or YAML")
    _add_manifest(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, summary)")
    _add_training_run(p, "continue from the run's last checkpoint", "skip the held-out evaluation")

    pp = _add_command(
        sub, "pretrain-parser",
        "pre-train the visual parser on scene attributes (offline stand-in for ImageNet weights)",
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
    _add_overrides(pp)

    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    s = _add_command(dsub, "synth", "draw the built-in scene world in the official formats")
    s.add_argument("--out", required=True)
    s.add_argument("--images", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--workers", type=int, default=1)

    pr = _add_command(
        sub,
        "probe",
        "inter-modality flow and modality NMI of pre-trained checkpoints, with figures "
        "('probe masks': the MFR mask figure)",
    )
    pr.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="run folder or checkpoints/step_XXXXXXXX folder (repeat to compare models)",
    )
    pr.add_argument(
        "--label", action="append", default=None, help="legend name, one per --checkpoint"
    )
    _add_manifest(pr)
    pr.add_argument("--out", required=True, help="folder for imf.json, nmi.json and figures")
    pr.add_argument("--num-samples", type=int, default=1000, help="image-caption pairs per model")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--dataset", default="coco", help="data set of the pairs")
    pr.add_argument("--split", default="val", help="split of the pairs")
    pr.add_argument(
        "--workers", type=int, default=None, help="data-loading processes (default: the run's)"
    )

    ft_parent = _add_command(
        sub, "finetune", "fine-tune on a downstream task (retrieval, vqa, nlvr2, snli-ve)"
    )
    ft_tasks = ft_parent.add_subparsers(dest="task", metavar="TASK")
    for name in FINETUNE_TASK_NAMES:  # one sub-parser per task: key=value may follow options
        ft = _add_command(ft_tasks, name, f"fine-tune for {name}", examples="finetune")
        _add_manifest(ft)
        ft.add_argument("--init", default=None, help="pre-training run or checkpoint folder "
                        "(default: random initialisation)")
        ft.add_argument("--out", required=True, help="run folder (checkpoints, logs, summary)")
        ft.add_argument("--config", default=None, help="recipe name or YAML (default: the task's)")
        _add_training_run(ft, "continue from the last checkpoint", "skip the validation evaluation")

    ev = _add_command(sub, "evaluate", "evaluate a fine-tuned run on one split; metrics as JSON")
    ev.add_argument("task", choices=FINETUNE_TASK_NAMES, metavar="TASK", help="retrieval, vqa, "
                    "nlvr2 or snli-ve")
    ev.add_argument("--checkpoint", required=True, help="fine-tuned run or checkpoint folder")
    _add_manifest(ev)
    ev.add_argument("--split", required=True, help="split to evaluate, e.g. test, val, dev")
    ev.add_argument("--out", required=True, help="JSON file for the metrics")
    ev.add_argument("--dataset", default=None, help="manifest data set (default: the run's "
                    "data.val_set)")
    ev.add_argument("--rerank-k", type=int, default=None, help="retrieval: re-score only the "
                    "top K candidates of a cheap unimodal score (default: full ranking)")
    ev.add_argument("--batch-pairs", type=int, default=None, help="pairs per forward pass")
    ev.add_argument("--workers", type=int, default=None, help="image loading processes "
                    "(default: the run's data.num_workers)")
    ev.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")

    ab = _add_command(
        sub,
        "ablate",
        "the paper's Table 5 ablation (CNN / Swin / patch embedders, MFR variants) on your "
        "data: pre-train, fine-tune, probe each row over seeds; table, JSON and plot",
    )
    _add_manifest(ab)
    ab.add_argument("--out", required=True, help="folder for runs/, table5.{md,json,png}")
    ab.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row (default 3)")
    ab.add_argument("--pretrain-steps", type=int, default=1000, help="pre-training steps per run")
    ab.add_argument("--finetune-steps", type=int, default=500, help="fine-tuning steps per run")
    ab.add_argument("--rows", default=None, help="comma-separated rows (default: all six)")
    ab.add_argument("--base-config", default=None, help="pre-training config the rows modify "
                    "(default: ablation, or tiny with --tiny)")
    ab.add_argument("--finetune-config", default=None, help="fine-tuning recipe (default: "
                    "TASK_world, e.g. vqa_world)")
    ab.add_argument("--task", default="vqa", choices=FINETUNE_TASK_NAMES, help="fine-tuning task")
    ab.add_argument("--tiny", action="store_true", help="CPU-sized rows on the tiny config")
    ab.add_argument("--probe-samples", type=int, default=300, help="held-out pairs for F^{1,L}")
    ab.add_argument("--no-progress", action="store_true", help="no per-step progress bars")
    _add_overrides(ab)

    i = sub.add_parser("info", help="print a config, the model's size and the environment")
    i.add_argument("--config", default="tiny")
    _add_overrides(i)
    return parser


def _finetune(args: argparse.Namespace) -> None:
    from vlparse.config import FinetuneConfig, load_config
    from vlparse.tasks.finetune import get_task, run_finetune

    task = get_task(args.task)  # fails early for tasks not implemented yet
    cfg = load_config(args.config or task.recipe, args.overrides, cls=FinetuneConfig)
    summary = run_finetune(args.task, cfg, args.data, args.out, init=args.init,
                           resume=args.resume, evaluate=not args.no_eval)
    print(f"wrote {args.out}/summary.json (validation: {summary['val']})")


def _evaluate(args: argparse.Namespace) -> None:
    import json

    from vlparse.tasks.finetune import run_evaluate

    overrides = []
    if args.rerank_k is not None:
        overrides.append(f"task.rerank_k={args.rerank_k}")
    if args.batch_pairs is not None:
        overrides.append(f"task.eval_batch_pairs={args.batch_pairs}")
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    result = run_evaluate(args.task, args.checkpoint, args.data, args.split, args.out,
                          dataset=args.dataset, overrides=overrides, device=args.device,
                          progress=not args.no_progress)
    print(json.dumps(result, indent=2))


def _ablate(args: argparse.Namespace) -> None:
    from vlparse.tasks.ablation import run_ablation

    run_ablation(
        args.data, args.out, rows=args.rows.split(",") if args.rows else None, seeds=args.seeds,
        pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
        base_config=args.base_config, finetune_config=args.finetune_config, task=args.task,
        overrides=args.overrides, tiny=args.tiny, probe_samples=args.probe_samples,
        progress=not args.no_progress,
    )
    print(f"wrote {args.out}/table5.md, table5.json and table5.png")


def _info(args: argparse.Namespace) -> None:
    import torch
    import yaml

    from vlparse.config import load_config, to_dict
    from vlparse.models.flops import format_model_info
    from vlparse.models.single_stream import VisualParsingModel

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        model = VisualParsingModel(cfg.model, cfg.model.text.vocab_size or 30522)
    n_all = sum(p.numel() for p in model.parameters())
    print(f"multi-modal model: {n_all / 1e6:.1f} M parameters in all")
    print(format_model_info(cfg))


def build_probe_masks_parser() -> argparse.ArgumentParser:
    """The parser of ``vlparse probe masks`` (the words ``probe masks`` already consumed)."""
    pm = argparse.ArgumentParser(
        prog="vlparse probe masks",
        description="Draw attention-guided and random MFR masks of a pre-trained run (paper "
        "Figure 2) into DIR/masks.png, with the masked token indices in DIR/masks.json.",
        epilog=EXAMPLES["probe masks"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pm.add_argument("--checkpoint", required=True, help="run folder or checkpoints/step_XXXXXXXX")
    _add_manifest(pm)
    pm.add_argument("--out", required=True, help="folder for masks.png and masks.json")
    pm.add_argument("--images", type=int, default=8, help="rows of the figure")
    pm.add_argument("--dataset", default="coco", help="data set of the images")
    pm.add_argument("--split", default="val", help="split of the images")
    pm.add_argument("--seed", type=int, default=0, help="picks images, captions and anchors")
    pm.add_argument(
        "--no-attention-map", action="store_true", help="leave out the anchor's attention column"
    )
    return pm


def _pretrain_parser(args: argparse.Namespace) -> None:
    from dataclasses import replace
    from pathlib import Path

    from vlparse.config import load_config
    from vlparse.tasks.parser_pretrain import ParserPretrainConfig, pretrain_parser

    cfg = load_config(args.config, args.overrides)
    given = {
        "images": args.images, "seed": args.seed, "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr,
    }
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["probe", "masks"]:  # sub-command of probe; `probe --checkpoint` stays as is
        parser = build_probe_masks_parser()
        args = parser.parse_args(argv[2:])
        args.command, args.version = "probe masks", False
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
    if args.version:
        from vlparse import __version__

        print(__version__)
        return 0
    try:
        if args.command == "quickstart":
            from vlparse.quickstart import run_quickstart

            run_quickstart(
                args.out, args.images, args.seed, args.overrides, args.workers, args.vqa_steps,
                processes=args.processes, prune_vocab=not args.full_vocab,
            )
        elif args.command == "pretrain":
            from vlparse.config import load_config
            from vlparse.tasks.pretrain import run_pretrain

            cfg = load_config(args.config, args.overrides)
            run_pretrain(cfg, args.data, args.out, resume=args.resume, evaluate=not args.no_eval)
        elif args.command == "pretrain-parser":
            _pretrain_parser(args)
        elif args.command == "data" and args.data_command == "synth":
            from vlparse.data.synthetic import generate

            path = generate(
                args.out,
                args.images,
                seed=args.seed,
                image_size=args.image_size,
                workers=args.workers,
            )
            print(f"wrote {path}")
        elif args.command == "probe masks":
            from pathlib import Path

            from vlparse.probing.masks import mask_figure

            png = mask_figure(
                args.checkpoint,
                args.data,
                Path(args.out) / "masks.png",
                num_images=args.images,
                dataset=args.dataset,
                split=args.split,
                seed=args.seed,
                attention_map=not args.no_attention_map,
            )
            print(f"wrote {png} and {png.with_suffix('.json')}")
        elif args.command == "probe":
            from vlparse.probing.run import run_probe

            run_probe(
                args.checkpoint,
                args.label,
                args.data,
                args.out,
                num_samples=args.num_samples,
                batch_size=args.batch_size,
                dataset=args.dataset,
                split=args.split,
                num_workers=args.workers,
            )
            print(f"wrote {args.out}/imf.json, nmi.json and figures")
        elif args.command == "finetune" and args.task:
            _finetune(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "ablate":
            _ablate(args)
        elif args.command == "info":
            _info(args)
        else:
            parser.print_help()
            return 2
    except (
        ConfigError, DataFormatError, ManifestError, BadImageError, BadDataError, FileNotFoundError,
        NotImplementedError,
    ) as e:
        print(f"vlparse: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
