"""Can a visual backbone trained from scratch learn an image-text contrastive loss quickly, and
how should its tokens be pooled? A small diagnostic behind the ITC option's max pooling.

Trains the quickstart's Swin parser (or a small CNN for reference) with a bag-of-words text
encoder under :func:`vlparse.objectives.itc.itc_loss`, one random caption per image, and prints
the running loss beside chance (ln of the batch size).

    python benchmarks/itc_pooling.py --data world/manifest.json --pool mean --steps 200
    python benchmarks/itc_pooling.py --data world/manifest.json --pool max --steps 200
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from vlparse.config import load_config
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.models.single_stream import VisualParsingModel
from vlparse.objectives.itc import itc_loss
from vlparse.processing.tokenization import build_tokenizer
from vlparse.processing.transforms import ImageTransform


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--pool", choices=["mean", "max", "cnn"], default="max")
    p.add_argument("--config", default="quickstart")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the visual side")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    torch.manual_seed(0)
    tok = build_tokenizer()
    records = read_pretrain_records(load_manifest(args.data), ["coco"], ["train"])[: args.images]
    cfg = load_config(args.config)
    tf = ImageTransform(cfg.model.visual.image_size)
    images = torch.stack([tf(Image.open(r.image_path).convert("RGB")) for r in records])
    length = cfg.model.text.max_text_len
    captions = [
        tok(r.captions, add_special_tokens=False, max_length=length, truncation=True,
            padding="max_length", return_tensors="pt")
        for r in records
    ]
    if args.pool == "cnn":
        visual: nn.Module = nn.Sequential(
            nn.Conv2d(3, 32, 4, 4), nn.GELU(), nn.Conv2d(32, 64, 2, 2), nn.GELU(),
            nn.Conv2d(64, 128, 2, 2),
        )
        dim = 128

        def encode(x: torch.Tensor) -> torch.Tensor:
            return visual(x).mean((2, 3))
    else:
        visual = VisualParsingModel(cfg.model, tok.vocab_size).visual
        dim = visual.out_dim

        def encode(x: torch.Tensor) -> torch.Tensor:
            tokens = visual(x).tokens
            return tokens.mean(1) if args.pool == "mean" else tokens.amax(1)

    width = 128
    words, image_proj, text_proj = nn.Embedding(tok.vocab_size, width), nn.Linear(dim, width), (
        nn.Linear(width, width)
    )
    opt = torch.optim.AdamW([
        {"params": list(visual.parameters()), "lr": args.lr},
        {"params": [*words.parameters(), *image_proj.parameters(), *text_proj.parameters()],
         "lr": 1e-3},
    ])
    g = torch.Generator().manual_seed(0)
    chance = math.log(args.batch_size)
    rows, running, t0 = [], 0.0, time.perf_counter()
    for step in range(args.steps + 1):
        idx = torch.randint(0, len(records), (args.batch_size,), generator=g).tolist()
        pick = [int(torch.randint(0, len(records[i].captions), (1,), generator=g)) for i in idx]
        ids = torch.stack([captions[i]["input_ids"][j] for i, j in zip(idx, pick, strict=True)])
        mask = torch.stack(
            [captions[i]["attention_mask"][j] for i, j in zip(idx, pick, strict=True)]
        ).float()
        text = text_proj((words(ids) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
        loss = itc_loss(image_proj(encode(images[idx])), text, torch.arange(args.batch_size))
        loss.backward()
        opt.step()
        opt.zero_grad()
        running = loss.item() if step == 0 else 0.9 * running + 0.1 * loss.item()
        if step % 25 == 0:
            rows.append({"step": step, "itc_running": running})
            print(f"{args.pool} step {step:4d} ITC {running:.3f} (chance {chance:.3f}) "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"pool": args.pool, "lr": args.lr, "batch_size": args.batch_size, "chance": chance,
             "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
