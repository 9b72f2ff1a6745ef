"""``vlparse probe``: inter-modality flow and modality NMI of pre-trained checkpoints (for FIBER
runs: the generalised flow and the gate values); ``vlparse probe masks``: the attention-guided
MFR mask figure."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command, add_manifest

# the paper's probe data, without importing the probing package (torch) to build the parser
IMF_DATA, NMI_DATA = "pretrain", "vg/train"

EXAMPLES = """examples:
  vlparse probe --checkpoint runs/tiny --data world/manifest.json --out probe/tiny
  vlparse probe --checkpoint runs/a --label MFR --checkpoint runs/b --label no-MFR \\
      --data world/manifest.json --out probe/ablation --num-samples 500
  vlparse probe --checkpoint runs/a/checkpoints/step_00001000 --data m.json --out probe/s1000
  vlparse probe --checkpoint runs/tiny --data world/manifest.json --out probe/held_out \
      --imf-data coco/val --nmi-data coco/val
  vlparse probe --checkpoint runs/fiber --checkpoint runs/tiny --data world/manifest.json \
      --out probe/fiber        (FIBER's flow and gates beside the single-stream IMF)
  vlparse probe masks --checkpoint runs/tiny --data world/manifest.json --out probe/tiny --images 8
  (vlparse probe masks --help: the attention-guided MFR mask figure, paper Figure 2)"""

MASKS_EXAMPLES = """examples:
  vlparse probe masks --checkpoint runs/tiny --data world/manifest.json --out probe/tiny --images 8
  vlparse probe masks --checkpoint runs/a/checkpoints/step_00001000 --data m.json --out figs \\
      --images 4 --dataset coco --split val --seed 1 --no-attention-map"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    pr = add_command(sub, "probe", "inter-modality flow and modality NMI of pre-trained "
                     "checkpoints (FIBER: generalised flow and gates), with figures ('probe "
                     "masks': the MFR mask figure)", EXAMPLES)
    pr.add_argument("--checkpoint", action="append", required=True,
                    help="run folder or checkpoints/step_XXXXXXXX folder of either family "
                    "(repeat to compare models; FIBER runs are drawn beside Visual Parsing ones)")
    pr.add_argument("--label", action="append", default=None,
                    help="legend name, one per --checkpoint")
    add_manifest(pr)
    pr.add_argument("--out", required=True, help="folder for imf.json, nmi.json (Visual Parsing), "
                    "fiber_flow.json (FIBER) and figures")
    pr.add_argument("--num-samples", type=int, default=1000,
                    help="image-caption pairs per model and probe")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--imf-data", default=IMF_DATA, metavar="SOURCE",
                    help="pairs of the IMF probe and of FIBER's flow: 'pretrain' (the run's "
                    "pre-training sets, as the paper's section 3.2; default) or DATASET/SPLIT, "
                    "e.g. coco/val")
    pr.add_argument("--nmi-data", default=None, metavar="SOURCE",
                    help=f"pairs of the NMI probe (default {NMI_DATA}: Visual Genome, as the "
                    "paper's section 4.4), 'pretrain' or DATASET/SPLIT; Visual Parsing runs only")
    pr.add_argument("--workers", type=int, default=None,
                    help="data-loading processes (default: the run's)")
    pr.set_defaults(run=run)


def build_probe_masks_parser() -> argparse.ArgumentParser:
    """The parser of ``vlparse probe masks`` (the words ``probe masks`` already consumed)."""
    pm = argparse.ArgumentParser(
        prog="vlparse probe masks",
        description="Draw attention-guided and random MFR masks of a pre-trained run (paper "
        "Figure 2) into DIR/masks.png, with the masked token indices in DIR/masks.json.",
        epilog=MASKS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pm.add_argument("--checkpoint", required=True, help="run folder or checkpoints/step_XXXXXXXX")
    add_manifest(pm)
    pm.add_argument("--out", required=True, help="folder for masks.png and masks.json")
    pm.add_argument("--images", type=int, default=8, help="rows of the figure")
    pm.add_argument("--dataset", default="coco", help="data set of the images")
    pm.add_argument("--split", default="val", help="split of the images")
    pm.add_argument("--seed", type=int, default=0, help="picks images, captions and anchors")
    pm.add_argument("--no-attention-map", action="store_true",
                    help="leave out the anchor's attention column")
    pm.set_defaults(run=run_masks, version=False)
    return pm


def run(args: argparse.Namespace) -> None:
    from vlparse.probing.fiber_run import run_probes

    result = run_probes(args.checkpoint, args.label, args.data, args.out,
                        num_samples=args.num_samples, batch_size=args.batch_size,
                        imf_data=args.imf_data, nmi_data=args.nmi_data, num_workers=args.workers)
    written = [name for key, name in (("imf", "imf.json, nmi.json"),
                                      ("fiber_flow", "fiber_flow.json, fiber_flow.png"))
               if key in result]
    print(f"wrote {args.out}/{', '.join(written)} and figures")


def run_masks(args: argparse.Namespace) -> None:
    from pathlib import Path

    from vlparse.errors import ProbeNotApplicableError
    from vlparse.probing.fiber_run import run_family
    from vlparse.probing.masks import mask_figure

    if run_family(args.checkpoint) == "fiber":
        raise ProbeNotApplicableError("probe masks: the attention-guided MFR masks are the "
                                      "Visual Parsing model's; a FIBER run has none")

    png = mask_figure(args.checkpoint, args.data, Path(args.out) / "masks.png",
                      num_images=args.images, dataset=args.dataset, split=args.split,
                      seed=args.seed, attention_map=not args.no_attention_map)
    print(f"wrote {png} and {png.with_suffix('.json')}")
