"""``vlparse data``: draw the built-in scene world (``synth``) and write a manifest's
pre-training records into tar shards (``shard``)."""

from __future__ import annotations

import argparse

from vlparse.commands._common import add_command, add_manifest

SYNTH_EXAMPLES = """examples:
  vlparse data synth --out world --images 2000 --seed 0
  vlparse data synth --out big --images 20000 --workers 16 --image-size 256"""

SHARD_EXAMPLES = """examples:
  vlparse data shard --data world/manifest.json --out world/shards --maxcount 1000
  vlparse data shard --data data/manifest.json --out data/shards --sets coco,vg \\
      --splits train,restval
  vlparse pretrain --config tiny --data world/manifest.json --out runs/s \\
      data.format=shards data.shards=world/shards

Writes each image once with all its captions (WebDataset tar shards, images as stored) and
index.json (shard names and counts, the manifest and this command). Run it again after an
interruption: finished shards are kept. Needs the webdataset package (vlparse[shards])."""


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give comma-separated names, e.g. coco,vg")
    return names


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    s = add_command(dsub, "synth", "draw the built-in scene world in the official formats",
                    SYNTH_EXAMPLES)
    s.add_argument("--out", required=True)
    s.add_argument("--images", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(run=run)
    h = add_command(dsub, "shard", "write a manifest's pre-training records into tar shards",
                    SHARD_EXAMPLES)
    add_manifest(h)
    h.add_argument("--out", required=True, help="the shard folder (created)")
    h.add_argument("--maxcount", type=int, default=10000, help="images per shard")
    h.add_argument("--sets", type=_names, default=None,
                   help="data sets, comma-separated (default: coco,vg, as data.train_sets)")
    h.add_argument("--splits", type=_names, default=None,
                   help="splits, comma-separated (default: train,restval, as data.train_splits)")
    h.set_defaults(run=run_shard)


def run(args: argparse.Namespace) -> None:
    from vlparse.data.synthetic import generate

    path = generate(args.out, args.images, seed=args.seed, image_size=args.image_size,
                    workers=args.workers)
    print(f"wrote {path}")


def run_shard(args: argparse.Namespace) -> None:
    from vlparse.data.shards import DEFAULT_SPLITS, write_shards

    index = write_shards(args.data, args.out, sets=args.sets,
                         splits=args.splits or DEFAULT_SPLITS, maxcount=args.maxcount)
    print(f"{args.out}: {index['total']} images in {len(index['shards'])} shard(s); "
          f"{index['num_bad']} bad image(s) skipped (named in index.json)")
