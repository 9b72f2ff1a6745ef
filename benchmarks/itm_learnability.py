"""How fast does ITM leave chance? A stripped pre-training loop on a scene world (CPU).

The quickstart's ITM stays at chance within its budget (docs/status.md). This script trains the
quickstart model (or a variant given by ``key=value`` overrides) with only the chosen loss terms
(``--terms itm,mlm,mfr,vla,itc``; the weights are the config's), logs the running training ITM
accuracy every 50 steps, and ends with the held-out evaluation of ``vlparse pretrain`` on the
world's COCO ``val`` split. ``--pre-ln`` swaps the multi-modal Transformer's post-LN layers for
pre-LN ones (an experiment only: no final LayerNorm, attention weights not available).

Example (one thread, the quickstart world drawn by ``vlparse quickstart`` under OUT/world):
    python benchmarks/itm_learnability.py --world /tmp/qs/world --steps 400 --terms itm \
        --out docs/results/itm_learnability/patch_itm_only.json \
        model.visual.kind=patch model.visual.patch_size=16 objectives.mfr_mode=off \
        objectives.vla_weight=0 model.text.initializer_range=0.08
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vlparse.config import load_config
from vlparse.data import read_pretrain_records
from vlparse.data.collate import collate_pretrain
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import PretrainDataset
from vlparse.io.files import atomic_write_text
from vlparse.models.single_stream import VisualParsingModel
from vlparse.processing.tokenization import build_tokenizer, special_ids
from vlparse.tasks.pretrain import pretrain_losses
from vlparse.tasks.pretrain_eval import evaluate_pretrain
from vlparse.train.optim import build_optimizer, lr_factor


def _pre_ln_forward(self, x, key_mask, output_attentions=False):
    """Pre-LN variant of EncoderLayer.forward (experiment only)."""
    b, n, d = x.shape
    y = self.attn_norm(x)
    q, k, v = self._heads(self.query(y)), self._heads(self.key(y)), self._heads(self.value(y))
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    x = x + self.attn_out(ctx.transpose(1, 2).reshape(b, n, d))
    x = x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))
    return x, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True, help="scene world folder (with manifest.json)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--terms", default="itm,mlm,mfr,vla", help="loss terms to train on")
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--tokenizer", default=".devdata/bert-tok")
    ap.add_argument("--pre-ln", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-images", type=int, default=150)
    ap.add_argument("--out", required=True, help="JSON file: log and held-out metrics")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.pre_ln:
        from vlparse.models import transformer

        transformer.EncoderLayer.forward = _pre_ln_forward
    terms = args.terms.split(",")
    cfg = load_config(args.config, [f"model.text.tokenizer={args.tokenizer}", *args.overrides])
    torch.manual_seed(cfg.train.seed)
    tok = build_tokenizer(cfg.model.text.tokenizer)
    ids = special_ids(tok)
    model = VisualParsingModel(cfg.model, ids["vocab_size"], ids["cls"], ids["sep"])
    manifest = load_manifest(Path(args.world) / "manifest.json")
    o = cfg.objectives

    def dataset(records, seed: int) -> PretrainDataset:
        return PretrainDataset(
            records, tok, image_size=cfg.model.visual.image_size,
            max_text_len=cfg.model.text.max_text_len, num_visual_tokens=model.num_visual_tokens,
            seed=seed, num_pos=o.num_pos, num_neg=o.num_neg, mlm_all=o.itm_pass == "shared",
        )

    train = dataset(read_pretrain_records(manifest, cfg.data.train_sets, cfg.data.train_splits), 0)
    val = dataset(read_pretrain_records(manifest, [cfg.data.val_set], [cfg.data.val_split]), 1)
    opt = build_optimizer(
        model.param_groups(cfg.optim.lr, cfg.optim.visual_lr, cfg.optim.weight_decay), cfg.optim
    )
    base_lr = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = len(train) // cfg.train.batch_size
    log, window, step, epoch, t0 = [], [], 0, 0, time.perf_counter()
    while step < args.steps:
        train.set_epoch(epoch)
        epoch += 1
        loader = DataLoader(
            train, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
            collate_fn=collate_pretrain, generator=torch.Generator().manual_seed(epoch),
        )
        for batch in loader:
            for g, lr in zip(opt.param_groups, base_lr, strict=True):
                g["lr"] = lr * lr_factor(step, cfg.optim, steps_per_epoch)
            losses = pretrain_losses(model, batch, o)
            parts = {
                "itm": losses.itm, "mlm": losses.mlm, "mfr": o.lambda_mfr * losses.mfr,
                "vla": o.vla_weight * losses.vla,
                "itc": o.lambda_itc * losses.itc if losses.itc is not None else None,
            }
            loss = sum(parts[t] for t in terms)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or 1e9)
            opt.step()
            step += 1
            window.append(losses.scalars())
            if step % 50 == 0:
                row = {"step": step, "wall_s": round(time.perf_counter() - t0, 1)}
                for key in ("itm_acc", "mlm_acc", "itc", "visual_spread"):
                    vals = [w[key] for w in window if key in w]
                    if vals:
                        row[key] = round(sum(vals) / len(vals), 4)
                window = []
                log.append(row)
                print(json.dumps(row), flush=True)
            if step >= args.steps:
                break
    held = evaluate_pretrain(
        model, val, num_images=args.eval_images, probe_images=0, retrieval_images=0
    )
    result = {
        "command": " ".join(["python", *sys.argv]),
        "terms": terms, "pre_ln": args.pre_ln, "steps": step,
        "wall_s": round(time.perf_counter() - t0, 1), "log": log, "held_out": held,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(held))


if __name__ == "__main__":
    main()
