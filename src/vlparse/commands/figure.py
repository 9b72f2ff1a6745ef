"""``vlparse figure``: figures of a trained model's predictions (``boxes``: the boxes a box model
finds for the phrases of a caption, or for category names, drawn on the image)."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command

EXAMPLES = """examples:
  vlparse figure boxes --checkpoint runs/fine --image scene.png \\
      --caption "a red circle left of a blue square" --out boxes.png
  vlparse figure boxes --checkpoint runs/fine --image scene.png --names "red square" \\
      "blue circle" --out detections.png"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("figure", help="figures of a model's predictions")
    fsub = f.add_subparsers(dest="figure_command", metavar="FIGURE_COMMAND")
    b = add_command(fsub, "boxes", "draw the boxes a box model finds for a caption's phrases "
                    "(or for category names) on an image", EXAMPLES)
    b.add_argument("--checkpoint", required=True,
                   help="a box model: a fine-grained FIBER run, a grounding / refexp / "
                        "detection run, or its saved model folder")
    b.add_argument("--image", required=True, help="the image file")
    what = b.add_mutually_exclusive_group(required=True)
    what.add_argument("--caption", help="ground the caption's phrases (content-word runs, or "
                                        "--phrases)")
    what.add_argument("--names", nargs="+", help="detect these category names")
    b.add_argument("--phrases", nargs="+", default=None,
                   help="with --caption: the substrings to ground")
    b.add_argument("--per-phrase", type=int, default=1, help="boxes drawn per phrase")
    b.add_argument("--min-score", type=float, default=0.3, help="with --names: score cut")
    b.add_argument("--out", required=True, help="the PNG to write")
    b.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    b.set_defaults(run=run_boxes)
    f.set_defaults(run=run, figure_parser=f)


def run(args: argparse.Namespace) -> None:
    """``vlparse figure`` without a figure: its help."""
    args.figure_parser.print_help()


def run_boxes(args: argparse.Namespace) -> None:
    import vlparse
    from vlparse.eval.draw import draw_grounding
    from vlparse.processing.images import load_image

    model = vlparse.load(args.checkpoint, device=args.device)
    if args.caption is not None:
        result = model.ground(args.image, args.caption, args.phrases, args.per_phrase)
        title = args.caption
    else:
        result = model.detect(args.image, args.names, args.min_score)
        title = ", ".join(args.names)
    draw_grounding(load_image(args.image), result.boxes, result.phrases, result.scores,
                   path=args.out, title=title)
    print(f"wrote {args.out} ({len(result)} boxes)")
