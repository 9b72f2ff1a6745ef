"""The nearest-neighbour caption baseline: each held-out image gets the first caption of the
training image (train + restval) most similar by the pre-trained model's ITC image embedding;
scored with the official caption metrics.

    python reports/2026-12-03-scene-world-captioning/nearest_neighbour.py PRETRAIN_RUN \\
        MANIFEST SPLIT OUT.json
"""

from __future__ import annotations

import json
import sys

import torch

from vlparse.config import FinetuneConfig, load_config
from vlparse.data.manifest import load_manifest
from vlparse.eval.caption import caption_scores
from vlparse.tasks.caption import (
    CaptionEvalDataset,
    nearest_neighbour_results,
    read_retrieval_records,
)
from vlparse.tasks.loading import load_model


def main(run: str, manifest_path: str, split: str, out: str) -> None:
    loaded = load_model(run)
    cfg = load_config("caption_world", cls=FinetuneConfig)
    manifest = load_manifest(manifest_path)
    train = read_retrieval_records(manifest, ["coco"], ["train", "restval"])
    test = read_retrieval_records(manifest, ["coco"], [split])
    results = nearest_neighbour_results(
        loaded.backbone.eval(), CaptionEvalDataset(train, loaded.processor),
        CaptionEvalDataset(test, loaded.processor), cfg, torch.device("cpu"))
    scores = caption_scores(results, {r.image_id: r.captions for r in test})
    payload = {**scores.to_dict(), "split": split, "results": results}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    print(json.dumps(scores.metrics, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:5])
