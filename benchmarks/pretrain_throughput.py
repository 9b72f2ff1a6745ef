"""Pre-training throughput at a given model size: images/s (each with its P + N texts), peak
memory and achieved TFLOP/s of a full training step (visual parser, ITM/VLA pass, MLM/MFR pass,
backward, AdamW), for vlparse and for a baseline measured in the same run: the same architecture
assembled from stock timm and transformers modules (benchmarks/stock_model.py).

Variants (``--variants``):
  stock-fp32-eager    stock modules, fp32, eager attention (the baseline)
  stock-bf16-sdpa     stock modules, bf16 autocast, SDPA attention in BERT, fused timm attention
  stock-bf16-compile  the same under torch.compile
  vlparse-bf16        vlparse, bf16 autocast, SDPA
  vlparse-bf16-compile  vlparse under torch.compile (visual parser and encoder compiled)

Usage (one GPU):
  python benchmarks/pretrain_throughput.py --config paper --batch-size 64 --out results.json
FLOPs are counted with torch.utils.flop_counter on one step of the vlparse model (fwd + bwd
matrix products and attention; the count is the same for the stock baseline, which computes the
same products), so TFLOP/s = FLOPs per step x steps/s. ``--out`` gets a ``results.json`` of
``reports/results.schema.json`` (see ``reports/2026-11-22-h100-throughput/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import write_results  # noqa: E402

from vlparse.config import load_config  # noqa: E402
from vlparse.models.single_stream import VisualParsingModel  # noqa: E402
from vlparse.objectives import pretrain_loss  # noqa: E402
from vlparse.tasks.pretrain import loss_weights  # noqa: E402


def step_loss(model, batch: dict, cfg):
    """The pre-training loss of one batch: the model's passes, then the weighted terms."""
    return pretrain_loss(model.forward_pretrain(batch), loss_weights(cfg, 1.0)).total


def make_batch(cfg, m: int, bsz: int, vocab: int, device: torch.device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    o, t = cfg.objectives, cfg.model.text
    s, n_txt, length = cfg.model.visual.image_size, o.num_pos + o.num_neg, t.max_text_len
    ids = torch.randint(1000, vocab, (bsz, n_txt, length), generator=g)
    lengths = torch.randint(length // 2, length, (bsz, n_txt), generator=g)
    mask = (torch.arange(length)[None, None] < lengths[..., None]).long()
    ids = ids * mask
    mlm_ids = ids.clone()
    labels = torch.full_like(ids, -100)
    chosen = (torch.rand(ids.shape, generator=g) < o.mlm_prob) & mask.bool()
    labels[chosen] = ids[chosen]
    mlm_ids[chosen] = 103
    batch = {
        "image": torch.randn(bsz, 3, s, s, generator=g),
        "input_ids": ids,
        "attention_mask": mask,
        "mlm_input_ids": mlm_ids,
        "mlm_labels": labels,
        "mfr_noise": torch.rand(bsz, m, generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def build(variant: str, cfg, vocab: int, device: torch.device):
    if variant.startswith("stock"):
        from stock_model import StockVisualParsing

        model = StockVisualParsing(cfg.model, vocab, attn="eager" if "eager" in variant else "sdpa",
                                   objectives=cfg.objectives)
    else:
        model = VisualParsingModel(cfg.model, vocab, objectives=cfg.objectives)
    model.to(device).train()
    if variant.endswith("compile"):
        model.visual.compile()
        if hasattr(model, "encoder"):
            model.encoder.compile()
        else:
            model.bert.encoder.compile()
    return model


def count_flops(cfg, vocab: int, device: torch.device, bsz: int) -> float:
    """FLOPs of one fwd+bwd step per image (fp32, vlparse model)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = VisualParsingModel(cfg.model, vocab, objectives=cfg.objectives).to(device).train()
    batch = make_batch(cfg, model.num_visual_tokens, bsz, vocab, device)
    counter = FlopCounterMode(display=False)
    with counter:
        step_loss(model, batch, cfg).backward()
    del model
    return counter.get_total_flops() / bsz


def run_variant(
    variant: str, cfg, vocab: int, device: torch.device, bsz: int, steps: int, warmup: int
) -> dict:
    torch.manual_seed(0)
    model = build(variant, cfg, vocab, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    batch = make_batch(cfg, model.num_visual_tokens, bsz, vocab, device)
    amp = not variant.endswith("fp32-eager")
    torch.cuda.reset_peak_memory_stats(device)

    def step() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = step_loss(model, batch, cfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t_compile = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize(device)
    t_compile = time.perf_counter() - t_compile
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        loss = step()
    end.record()
    torch.cuda.synchronize(device)
    seconds = start.elapsed_time(end) / 1000
    out = {
        "variant": variant,
        "batch_images": bsz,
        "texts_per_image": cfg.objectives.num_pos + cfg.objectives.num_neg,
        "steps": steps,
        "images_per_s": bsz * steps / seconds,
        "step_ms": 1000 * seconds / steps,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "warmup_s": t_compile,
        "final_loss": float(loss),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="paper")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--variants", default="stock-fp32-eager,stock-bf16-sdpa,vlparse-bf16,vlparse-bf16-compile"
    )
    ap.add_argument("--out", default="results.json", help="results.json to write")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    cfg = load_config(args.config, args.overrides)
    vocab = 30522
    flops_per_image = count_flops(cfg, vocab, device, 4)
    results = []
    for variant in args.variants.split(","):
        try:
            r = run_variant(variant, cfg, vocab, device, args.batch_size, args.steps, args.warmup)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            r = {"variant": variant, "batch_images": args.batch_size, "error": "out of memory"}
        if "images_per_s" in r:
            r["tflops_per_s"] = flops_per_image * r["images_per_s"] / 1e12
        results.append(r)
        torch.cuda.empty_cache()
        print(json.dumps(r), flush=True)
    base = next(
        (r for r in results if r["variant"] == "stock-fp32-eager" and "images_per_s" in r), None
    )
    for r in results:
        if base and "images_per_s" in r:
            r["speedup_vs_stock_fp32_eager"] = r["images_per_s"] / base["images_per_s"]
    report = {
        "config": args.config,
        "flops_per_image_step": flops_per_image,
        "goal_images_per_s": 500,
        "variants": results,
    }
    record = write_results(args.out, script=__file__, topic="pretrain-throughput", device=device,
                           results=report, question="How many images per second does a full "
                           "pre-training step reach, against the same architecture built from "
                           "stock timm and transformers modules?")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
