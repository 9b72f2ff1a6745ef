"""How often a randomly drawn unmatched caption is in fact true of the image (scene world).

For every image of a split, ``--draws`` captions of other images of the same split are drawn at
random (as the held-out ITM evaluation draws its unmatched captions) and checked against the
image's scene with :func:`vlparse.data.synthetic.truth.caption_truth`. Reports the fractions
true / false / ambiguous, overall and by the caption's position in its image's list (the
world writes its templates in the order scene, relation, size, count, list).

    vlparse data synth --out world --images 20000 --workers 8
    python reports/2026-11-23-scene-world-negatives/negative_truth.py \
        --data world/manifest.json --split val --out negative_truth_world20k.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict

from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.synthetic.truth import SceneTruth
from vlparse.io.files import atomic_write_text

TEMPLATES = ("scene", "relation", "size", "count", "list")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="manifest.json of a scene world")
    ap.add_argument("--set", default="coco")
    ap.add_argument("--split", default="val")
    ap.add_argument("--draws", type=int, default=20, help="unmatched captions per image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    manifest = load_manifest(args.data)
    truth = SceneTruth.from_manifest(manifest)
    if truth is None:
        raise SystemExit(f"{args.data} names no scenes file (generator.scenes): not a scene "
                         "world, or written by an older vlparse")
    records = read_pretrain_records(manifest, [args.set], [args.split])
    rng = random.Random(args.seed)
    overall: Counter = Counter()
    by_slot: dict[int, Counter] = defaultdict(Counter)
    for i, rec in enumerate(records):
        for _ in range(args.draws):
            k = rng.randrange(len(records) - 1)
            other = records[k + (k >= i)]
            slot = rng.randrange(len(other.captions))
            verdict = truth.holds(rec.source, rec.image_id, other.captions[slot])
            name = {True: "true", False: "false", None: "ambiguous"}[verdict]
            overall[name] += 1
            by_slot[slot][name] += 1

    def frac(c: Counter) -> dict[str, float]:
        n = sum(c.values())
        return {k: round(c[k] / n, 4) for k in ("true", "false", "ambiguous")} | {"pairs": n}

    result = {
        "data": str(args.data), "set": args.set, "split": args.split,
        "images": len(records), "draws_per_image": args.draws, "seed": args.seed,
        "overall": frac(overall),
        "by_caption_position": {
            f"{s}:{TEMPLATES[s] if s < len(TEMPLATES) else '?'}": frac(by_slot[s])
            for s in sorted(by_slot)
        },
        "itm_accuracy_ceiling_random_negatives": round(
            1 - 0.5 * (overall["true"] + overall["ambiguous"]) / sum(overall.values()), 4),
        "command": "python negative_truth.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "note": "a model that answers every pair by the truth still loses the true/ambiguous "
                "unmatched pairs; with 2 matched + 2 unmatched texts per image its held-out ITM "
                "accuracy is at most itm_accuracy_ceiling_random_negatives",
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return result


if __name__ == "__main__":
    main()
