"""Pre-training throughput at a given model size: images/s (each with its P + N texts), peak
memory and achieved TFLOP/s of a full training step (visual parser, ITM/VLA pass, MLM/MFR pass,
backward, AdamW), for vlparse and for a baseline measured in the same run: the same architecture
assembled from stock timm and transformers modules (benchmarks/stock_model.py).

A variant is a family and settings joined by ``-`` (``--variants``):
  family    ``stock`` (timm + transformers modules) or ``vlparse``
  fp32      no autocast (default: bf16 autocast); ``fp8``: torchao FP8 layers
            (vlparse.models.float8) under bf16 autocast
  eager     explicit softmax attention in timm and BERT (stock only; default SDPA)
  compile   torch.compile of the visual parser and the encoder
  static    fixed-size gathers (``set_static_shapes``); with ``compile``, the whole step
            (passes and loss) is compiled as one function instead of the two modules
e.g. ``stock-bf16-compile``, ``vlparse-bf16-static-compile``, ``vlparse-fp8-compile``.

Usage (one GPU):
  python benchmarks/pretrain_throughput.py --config paper --batch-size 64 --out results.json
  python benchmarks/pretrain_throughput.py --config tiny --device cpu --batch-size 2 --steps 1 \
      --warmup 1 --variants stock-fp32,vlparse-fp32                      # CPU smoke run
FLOPs are counted with torch.utils.flop_counter on one fp32 step of the vlparse model at batch 4
(fwd + bwd matrix products and attention; the stock baseline computes the same products), so
TFLOP/s = FLOPs per image-step x images/s. The results are written after every variant;
``--budget-s`` stops starting new variants once that much time has passed (the JSON lists them
as skipped). ``--out`` gets a ``results.json`` of ``reports/results.schema.json``.
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

SETTINGS = {"fp32", "bf16", "fp8", "eager", "sdpa", "compile", "static"}
GOAL_IMAGES_PER_S = 500


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


def parse_variant(name: str) -> dict:
    """``{"family", "settings"}`` of a variant name; unknown parts fail."""
    family, *settings = name.split("-")
    unknown = set(settings) - SETTINGS
    if family not in ("stock", "vlparse") or unknown:
        raise SystemExit(f"unknown variant {name!r}: family stock or vlparse, settings from "
                         f"{sorted(SETTINGS)}")
    return {"family": family, "settings": set(settings)}


def build(variant: str, cfg, vocab: int, device: torch.device):
    """``(model, loss_fn(batch))`` of a variant, on ``device``, in training mode."""
    v = parse_variant(variant)
    s = v["settings"]
    if v["family"] == "stock":
        from stock_model import StockVisualParsing

        model = StockVisualParsing(cfg.model, vocab, attn="eager" if "eager" in s else "sdpa",
                                   objectives=cfg.objectives)
    else:
        model = VisualParsingModel(cfg.model, vocab, objectives=cfg.objectives)
    model.set_static_shapes("static" in s)
    if "fp8" in s:
        from vlparse.models.float8 import convert_to_float8

        convert_to_float8(model)
    model.to(device).train()

    def loss_fn(batch):
        return step_loss(model, batch, cfg)

    if "compile" in s and "static" in s:
        return model, torch.compile(loss_fn)
    if "compile" in s:
        model.visual.compile()
        (model.encoder if hasattr(model, "encoder") else model.bert.encoder).compile()
    return model, loss_fn


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(variant: str, cfg, vocab: int, device: torch.device, bsz: int, steps: int,
                warmup: int) -> dict:
    torch.manual_seed(0)
    model, loss_fn = build(variant, cfg, vocab, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    batch = make_batch(cfg, model.num_visual_tokens, bsz, vocab, device)
    amp = "fp32" not in parse_variant(variant)["settings"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    seconds = time.perf_counter() - t0
    cuda = device.type == "cuda"
    return {
        "variant": variant, "batch_images": bsz,
        "texts_per_image": cfg.objectives.num_pos + cfg.objectives.num_neg, "steps": steps,
        "images_per_s": bsz * steps / seconds, "step_ms": 1000 * seconds / steps,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "warmup_s": warmup_s, "final_loss": float(loss),
    }


def compare(results: list[dict]) -> dict:
    """The best vlparse and best stock variant of the run and their ratios."""
    def best(family: str) -> dict | None:
        done = [r for r in results if r["variant"].startswith(family) and "images_per_s" in r]
        return max(done, key=lambda r: r["images_per_s"], default=None)

    ours, stock = best("vlparse"), best("stock")
    if ours is None or stock is None:
        return {}
    out = {"best_vlparse": ours["variant"], "best_stock": stock["variant"],
           "speed_ratio": ours["images_per_s"] / stock["images_per_s"]}
    if ours.get("peak_memory_gib") and stock.get("peak_memory_gib"):
        out["memory_ratio"] = ours["peak_memory_gib"] / stock["peak_memory_gib"]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="paper")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", default="stock-bf16-sdpa,vlparse-bf16,stock-bf16-compile,"
                    "vlparse-bf16-compile")
    ap.add_argument("--device", default=None, help="default: cuda")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no new variant after this many seconds")
    ap.add_argument("--out", default="results.json", help="results.json to write")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    device = torch.device(args.device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU (or --device cpu for a smoke run)")
    variants = args.variants.split(",")
    for v in variants:
        parse_variant(v)
    t_start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = load_config(args.config, args.overrides)
    vocab = 30522
    flops_per_image = count_flops(cfg, vocab, device, 4 if device.type == "cuda" else 1)
    report = {"config": args.config, "flops_per_image_step": flops_per_image,
              "goal_images_per_s": GOAL_IMAGES_PER_S, "variants": [], "skipped": []}
    record = {}
    for variant in variants:
        if args.budget_s is not None and time.perf_counter() - t_start > args.budget_s:
            report["skipped"].append(variant)
            continue
        try:
            r = run_variant(variant, cfg, vocab, device, args.batch_size, args.steps,
                            args.warmup)
            r["tflops_per_s"] = flops_per_image * r["images_per_s"] / 1e12
        except torch.OutOfMemoryError:
            r = {"variant": variant, "batch_images": args.batch_size, "error": "out of memory"}
        except Exception as e:  # a variant that fails (e.g. FP8 without torchao) is recorded
            r = {"variant": variant, "error": f"{type(e).__name__}: {e}"[:500]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report["variants"].append(r)
        report["comparison"] = compare(report["variants"])
        print(json.dumps(r), flush=True)
        record = write_results(args.out, script=__file__, topic="pretrain-throughput",
                               device=device, results=report, argv=argv,
                               question="How many images per second does a full pre-training "
                               "step reach, against the same architecture built from stock "
                               "timm and transformers modules in the same run?")
    print(json.dumps(report.get("comparison", {})))
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
