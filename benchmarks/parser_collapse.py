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

from vlparse.config import load_config
from vlparse.data import read_pretrain_records
from vlparse.data.collate import collate_pretrain
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import PretrainDataset
from vlparse.models.single_stream import VisualParsingModel
from vlparse.processing.tokenization import build_tokenizer
from vlparse.tasks.pretrain import pretrain_losses


def main() -> None:
    manifest, overrides = sys.argv[1], sys.argv[2:]
    cfg = load_config("quickstart", overrides)
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 30522)
    recs = read_pretrain_records(load_manifest(manifest), ["coco"], ["train"])
    ds = PretrainDataset(recs, tok, cfg.model.visual.image_size, cfg.model.text.max_text_len,
                         model.num_visual_tokens)
    probe = collate_pretrain([ds[i] for i in range(32)])
    opt = torch.optim.AdamW(model.param_groups(cfg.optim.lr, cfg.optim.visual_lr, 0.01))
    t0 = time.time()
    for step in range(int(os.environ.get("STEPS", "201"))):
        batch = collate_pretrain([ds[(step * 16 + i + 100) % len(ds)] for i in range(16)])
        losses = pretrain_losses(model, batch, cfg.objectives)
        losses.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % 50 == 0:
            with torch.no_grad():
                tokens = model.encode_image(probe["image"]).tokens
            keep = ("mlm", "itm", "mfr", "itm_acc")
            scalars = {k: round(v, 3) for k, v in losses.scalars().items() if k in keep}
            print(overrides, step, "std_img", round(tokens.std(0).mean().item(), 3), scalars,
                  round(time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
