"""The ``vlparse`` command line. Every command has ``--help`` with examples."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vlparse.config import ConfigError
from vlparse.data.formats.jsonio import DataFormatError
from vlparse.data.images import BadImageError
from vlparse.data.manifest import ManifestError
from vlparse.train.loop import BadDataError

EXAMPLES = {
    "quickstart": """examples:
  vlparse quickstart
  vlparse quickstart --out /tmp/qs --images 2000 train.max_steps=300""",
    "pretrain": """examples:
  vlparse pretrain --config tiny --data world/manifest.json --out runs/tiny
  vlparse pretrain --config paper --data /data/manifest.json --out runs/paper train.batch_size=1024
  vlparse pretrain --config paper --data /data/manifest.json --out runs/paper --resume
  torchrun --nproc_per_node 8 -m vlparse.cli pretrain --config paper --data m.json --out runs/p""",
    "synth": """examples:
  vlparse data synth --out world --images 2000 --seed 0
  vlparse data synth --out big --images 20000 --workers 16 --image-size 256""",
    "probe": """examples:
  vlparse probe --checkpoint runs/tiny --data world/manifest.json --out probe/tiny
  vlparse probe --checkpoint runs/a --label MFR --checkpoint runs/b --label no-MFR \\
      --data world/manifest.json --out probe/ablation --num-samples 500
  vlparse probe --checkpoint runs/a/checkpoints/step_00001000 --data m.json --out probe/s1000""",
}


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. train.batch_size=32 objectives.mfr_mode=random",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlparse",
        description="Vision-language pre-training with a self-attention visual parser.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    q = sub.add_parser(
        "quickstart",
        help="draw a scene world, pre-train the tiny model, report held-out metrics",
        epilog=EXAMPLES["quickstart"],
        formatter_class=raw,
    )
    q.add_argument("--out", default="vlparse-quickstart", help="output folder")
    q.add_argument("--images", type=int, default=3000, help="scene world size")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=None, help="processes drawing the world")
    _add_overrides(q)

    p = sub.add_parser(
        "pretrain",
        help="pre-train on the caption data sets of a manifest",
        epilog=EXAMPLES["pretrain"],
        formatter_class=raw,
    )
    p.add_argument("--config", required=True, help="built-in name (tiny, ablation, paper) or YAML")
    p.add_argument("--data", required=True, help="manifest.json naming the data files")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, summary)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    _add_overrides(p)

    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    s = dsub.add_parser(
        "synth",
        help="draw the built-in scene world in the official formats",
        epilog=EXAMPLES["synth"],
        formatter_class=raw,
    )
    s.add_argument("--out", required=True)
    s.add_argument("--images", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--workers", type=int, default=1)

    pr = sub.add_parser(
        "probe",
        help="inter-modality flow and modality NMI of pre-trained checkpoints, with figures",
        epilog=EXAMPLES["probe"],
        formatter_class=raw,
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
    pr.add_argument("--data", required=True, help="manifest.json naming the data files")
    pr.add_argument("--out", required=True, help="folder for imf.json, nmi.json and figures")
    pr.add_argument("--num-samples", type=int, default=1000, help="image-caption pairs per model")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--dataset", default="coco", help="data set of the pairs")
    pr.add_argument("--split", default="val", help="split of the pairs")

    i = sub.add_parser("info", help="print a config, the model's size and the environment")
    i.add_argument("--config", default="tiny")
    _add_overrides(i)
    return parser


def _info(args: argparse.Namespace) -> None:
    import yaml

    from vlparse.config import load_config, to_dict
    from vlparse.models.single_stream import VisualParsingModel

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    model = VisualParsingModel(cfg.model, cfg.model.text.vocab_size or 30522)
    n_vis = sum(p.numel() for p in model.visual.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    print(f"visual tokens m = {model.num_visual_tokens}, width c = {model.visual_dim}")
    print(f"parameters: visual parser {n_vis / 1e6:.1f} M, total {n_all / 1e6:.1f} M")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from vlparse import __version__

        print(__version__)
        return 0
    try:
        if args.command == "quickstart":
            from vlparse.quickstart import run_quickstart

            run_quickstart(args.out, args.images, args.seed, args.overrides, args.workers)
        elif args.command == "pretrain":
            from vlparse.config import load_config
            from vlparse.tasks.pretrain import run_pretrain

            cfg = load_config(args.config, args.overrides)
            run_pretrain(cfg, args.data, args.out, resume=args.resume, evaluate=not args.no_eval)
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
            )
            print(f"wrote {args.out}/imf.json, nmi.json and figures")
        elif args.command == "info":
            _info(args)
        else:
            parser.print_help()
            return 2
    except (
        ConfigError, DataFormatError, ManifestError, BadImageError, BadDataError, FileNotFoundError
    ) as e:
        print(f"vlparse: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
