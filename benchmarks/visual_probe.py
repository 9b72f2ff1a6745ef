"""How much colour information do a parser's visual tokens carry? A linear-probe diagnostic.

For each colour word of the scene world, the label of an image is whether any of its captions
names that colour. A logistic regression on the parser's tokens (max- and mean-pooled) predicts
it; the held-out ROC AUC says how linearly decodable colour is. The same probe on a coarse RGB
histogram of the pixels gives a reference for what the (noisy) labels allow.

    python benchmarks/visual_probe.py --data world/manifest.json --config quickstart
    python benchmarks/visual_probe.py --data world/manifest.json --run runs/tiny  # a trained parser

Prints one line per feature set and writes ``--out`` JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.synthetic import COLORS
from vlparse.processing.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform


def colour_labels(records) -> np.ndarray:
    """(N, len(COLORS)) 0/1: colour word named in any caption of the image."""
    words = [{w.strip(".,").lower() for c in r.captions for w in c.split()} for r in records]
    return np.array([[c in ws for c in COLORS] for ws in words], dtype=np.int64)


def rgb_histogram(images: torch.Tensor, bins: int = 4) -> np.ndarray:
    """(N, 2 * bins^3): pixel fractions per RGB cell and their presence (> 0.3 %)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    q = ((images * std + mean).clamp(0, 1) * (bins - 1e-3)).long()
    cell = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    hist = torch.stack([torch.bincount(c.flatten(), minlength=bins**3) for c in cell]).float()
    hist = hist / cell[0].numel()
    return torch.cat([hist, (hist > 0.003).float()], 1).numpy()


def probe_auc(x: np.ndarray, y: np.ndarray, n_train: int) -> list[float]:
    aucs = []
    for j in range(y.shape[1]):
        if len(set(y[:n_train, j])) < 2 or len(set(y[n_train:, j])) < 2:
            aucs.append(float("nan"))
            continue
        clf = LogisticRegression(max_iter=3000).fit(x[:n_train], y[:n_train, j])
        aucs.append(float(roc_auc_score(y[n_train:, j], clf.predict_proba(x[n_train:])[:, 1])))
    return aucs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--config", default="quickstart", help="config of a randomly initialised model")
    p.add_argument("--run", default=None, help="a pre-training run folder instead of --config")
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    torch.manual_seed(0)
    if args.run:
        from vlparse.models.loading import load_run

        model, cfg, _ = load_run(args.run)
        source = args.run
    else:
        from vlparse import create_model
        from vlparse.config import load_config

        cfg = load_config(args.config)
        model = create_model(cfg.model)
        source = f"random init ({args.config})"
    model.eval()
    records = read_pretrain_records(load_manifest(args.data), ["coco"], ["train"])[: args.images]
    tf = ImageTransform(cfg.model.visual.image_size)
    images = torch.stack([tf(Image.open(r.image_path).convert("RGB")) for r in records])
    with torch.no_grad():
        tokens = torch.cat([model.encode_image(images[i:i + 100]).tokens
                            for i in range(0, len(images), 100)])
    y = colour_labels(records)
    n_train = int(0.8 * len(records))
    feats = {
        "tokens_max": tokens.amax(1).numpy(),
        "tokens_mean_max": torch.cat([tokens.mean(1), tokens.amax(1)], 1).numpy(),
        "rgb_histogram": rgb_histogram(images),
    }
    result = {"source": source, "images": len(records), "colours": list(COLORS), "auc": {}}
    for name, x in feats.items():
        aucs = probe_auc(x, y, n_train)
        result["auc"][name] = {"per_colour": aucs, "mean": float(np.nanmean(aucs))}
        print(f"{name:16s} mean AUC {np.nanmean(aucs):.3f}  " + " ".join(f"{a:.2f}" for a in aucs))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
