"""Does the visual parser collapse during pre-training from scratch?

Trains the quickstart model for N steps on a scene world and prints, every 50 steps, the standard
deviation of the parser's tokens across 32 fixed images (``std_img``; near 0 = the parser gives one
output whatever the image) with the losses. Results: ``benchmarks/results/parser_collapse/``.

Usage:
  vlparse data synth --out /tmp/world --images 3000 --image-size 128 --workers 2
  STEPS=201 python benchmarks/parser_collapse.py /tmp/world/manifest.json objectives.mfr_mode=off
  STEPS=401 python benchmarks/parser_collapse.py /tmp/world/manifest.json optim.visual_lr=3e-5
"""

from __future__ import annotations

import os
import sys
import time

import torch

from vlparse.config import OptimConfig, load_config
from vlparse.data import PretrainCollator, PretrainDataset, read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.models.processor import VisualParsingProcessor
from vlparse.models.single_stream import VisualParsingModel
from vlparse.objectives import pretrain_loss
from vlparse.processing.tokenization import build_tokenizer
from vlparse.tasks.pretrain import loss_weights


def main() -> None:
    manifest, overrides = sys.argv[1], sys.argv[2:]
    cfg = load_config("quickstart", overrides)
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 30522, objectives=cfg.objectives)
    recs = read_pretrain_records(load_manifest(manifest), ["coco"], ["train"])
    ds = PretrainDataset(recs)
    processor = VisualParsingProcessor(tok, cfg.model.visual.image_size,
                                       cfg.model.text.max_text_len)
    collate = PretrainCollator(recs, processor, model.num_visual_tokens)
    probe = collate([ds[i] for i in range(32)])
    optim = OptimConfig(lr=cfg.optim.lr, visual_lr=cfg.optim.visual_lr, weight_decay=0.01)
    opt = torch.optim.AdamW(model.param_groups(optim))
    t0 = time.time()
    for step in range(int(os.environ.get("STEPS", "201"))):
        batch = collate([ds[(step * 16 + i + 100) % len(ds)] for i in range(16)])
        out = model.forward_pretrain(batch)
        losses = pretrain_loss(out, loss_weights(cfg, 1.0))
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % 50 == 0:
            with torch.no_grad():
                tokens = model.encode_image(probe["image"]).tokens
            scalars = {k: round(float(losses.parts[k].detach()), 3) for k in ("mlm", "itm", "mfr")
                       if k in losses.parts}
            scalars["itm_acc"] = round(losses.counts["itm_correct"]
                                       / losses.counts["itm_total"], 3)
            print(overrides, step, "std_img", round(tokens.std(0).mean().item(), 3), scalars,
                  round(time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
