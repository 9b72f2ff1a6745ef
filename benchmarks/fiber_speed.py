"""FIBER speed on one GPU: pre-training images/s, peak memory and TFLOP/s of ``fiber_base``
beside the ``paper`` (Visual Parsing) model in the same run, and the pairs/s of two-stage
retrieval (ITC shortlist, fused ITM re-ranking) beside the full fused ITM ranking.

Pre-training: a full step of each model (its passes, the weighted loss, backward, AdamW) under
bf16 autocast on the same number of images. FIBER: ``forward_pretrain`` (ITC in dual-encoder
mode, ITM with hard negatives, MLM on the fused text; loss weights of the config); the paper
model: ``benchmarks/pretrain_throughput.py``'s ``vlparse-bf16`` variant. FLOPs are counted with
``torch.utils.flop_counter`` on one fp32 step of each model (forward and backward), so
TFLOP/s = FLOPs per image-step x images/s.

Retrieval, through ``FiberModel``'s own fusion functions (in eval mode, bf16 on the GPU): each
image's and each text's *bottom* (the blocks and layers below the first fused pair, which do not
see the other modality) is computed once. ITC: the unfused tops on the bottoms give the dual
encoder's embeddings, and one matrix product scores every image-text pair. ITM: the fused
pairs on the cached bottoms and the ITM head score one pair per row. Two-stage retrieval of
``I`` images and ``T = captions_per_image x I`` texts, measured end to end: the bottoms, ITC for
all ``I x T`` pairs, then ITM re-ranking of each text's ``k`` best images and each image's ``k``
best texts (``(I + T) k`` fused pairs); its pairs/s counts the ``I x T`` pairs ranked. The full
ITM ranking is timed on a sample of pairs; its rate gives the projected time of a full ranking.

The models are randomly initialised (``model.visual.pretrained=null
model.text.pretrained=null``: fiber_base's ImageNet Swin and RoBERTa weights are not needed
offline) and no tokenizer is read: texts are random token ids below the configured vocabulary
(RoBERTa's 50,265 for fiber_base) with the configured padding id, because speed depends on the
vocabulary size and the shapes, not on the weights or the words. Images are random tensors;
data loading is not measured.

Usage:
  python benchmarks/fiber_speed.py --out fiber.json                        # one GPU, fiber_base
  python benchmarks/fiber_speed.py --config tiny --device cpu --out f.json  # CPU smoke, seconds
``--out`` gets a ``results.json`` of ``reports/results.schema.json``, rewritten after each part.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_throughput import count_flops, run_variant  # noqa: E402
from results_file import write_results  # noqa: E402

from vlparse.config import load_config  # noqa: E402
from vlparse.models.fiber import FiberModel  # noqa: E402
from vlparse.models.fiber.fusion import (  # noqa: E402
    fused_top,
    image_bottom,
    text_bottom,
    unfused_top,
)
from vlparse.objectives import pretrain_loss  # noqa: E402
from vlparse.tasks.pretrain_fiber import fiber_loss_weights  # noqa: E402

RANDOM_INIT = ["model.visual.pretrained=null", "model.text.pretrained=null"]
# per size: FIBER config and its overrides, single-stream config and its overrides (tiny: shrunk
# further, so that the CPU smoke run takes seconds)
SIZES = {
    "base": ("fiber_base", [], "paper", []),
    "tiny": ("fiber_tiny", ["model.visual.image_size=64", "model.visual.window_size=4",
                            "model.text.hidden_size=64", "model.text.num_heads=2",
                            "model.text.intermediate_size=128", "model.text.num_layers=3",
                            "model.text.max_text_len=12", "model.fusion.num_layers=2",
                            "model.hidden_size=32", "model.itc_dim=16"],
             "tiny", ["model.visual.embed_dim=16", "model.visual.num_heads=[2]",
                      "model.text.hidden_size=32", "model.text.num_layers=2",
                      "model.text.num_heads=2", "model.text.intermediate_size=64",
                      "model.text.max_text_len=12", "objectives.ipot_iters=5"]),
}
# defaults per size: batch, steps, warm-up, images, captions per image, k, sampled ITM pairs
DEFAULTS = {"base": dict(batch_size=32, steps=5, warmup=2, images=100, captions_per_image=5,
                         rerank_k=16, itm_sample=2048, batch_pairs=256),
            "tiny": dict(batch_size=2, steps=1, warmup=1, images=3, captions_per_image=2,
                         rerank_k=2, itm_sample=8, batch_pairs=8)}
FULL_IMAGES, FULL_CAPTIONS, FULL_K = 1000, 5000, 128  # Flickr30K test, ALBEF's k


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_texts(cfg, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` texts ``(n, L)`` of random ids in ``[4, V)`` and lengths in ``[L / 2, L]``, padded
    with the configured padding id; and their mask."""
    t = cfg.model.text
    length = t.max_text_len
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = torch.randint(4, t.vocab_size, (n, length), generator=g)
    return torch.where(mask.bool(), ids, t.pad_token_id), mask


def fiber_batch(cfg, bsz: int, device: torch.device, seed: int = 0) -> dict:
    """A pre-training batch of ``bsz`` distinct images with one caption each, 15 % of its real
    tokens masked for MLM (id 3 stands for the mask token)."""
    g = torch.Generator().manual_seed(seed)
    ids, mask = random_texts(cfg, bsz, g)
    chosen = (torch.rand(ids.shape, generator=g) < cfg.objectives.mlm_prob) & mask.bool()
    chosen[:, 1] = True  # at least one masked token per caption
    labels = torch.where(chosen, ids, -100)
    size = cfg.model.visual.image_size
    batch = {"image": torch.randn(bsz, 3, size, size, generator=g),
             "input_ids": ids[:, None], "attention_mask": mask[:, None],
             "mlm_input_ids": torch.where(chosen, 3, ids)[:, None],
             "mlm_labels": labels[:, None], "image_id": torch.arange(bsz),
             "item_noise": torch.rand(bsz, 2, generator=g)}
    return {k: v.to(device) for k, v in batch.items()}


def fiber_step_loss(model: FiberModel, batch: dict, cfg) -> torch.Tensor:
    return pretrain_loss(model.forward_pretrain(batch), fiber_loss_weights(cfg.objectives)).total


def fiber_flops(model: FiberModel, cfg, device: torch.device, bsz: int) -> float:
    """FLOPs of one fp32 forward and backward pre-training step per image (no optimizer step;
    the gradients are dropped)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    batch = fiber_batch(cfg, bsz, device)
    counter = FlopCounterMode(display=False)
    with counter:
        fiber_step_loss(model, batch, cfg).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / bsz


def fiber_pretrain(model: FiberModel, cfg, device: torch.device, bsz: int, steps: int,
                   warmup: int) -> dict:
    """Images/s, step time and peak memory of FIBER's pre-training step (bf16 on CUDA)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    batch = fiber_batch(cfg, bsz, device)
    amp = device.type == "cuda"
    if amp:
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = fiber_step_loss(model, batch, cfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

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
    return {"model": cfg.model.name, "precision": "bf16" if amp else "fp32",
            "batch_images": bsz, "steps": steps, "images_per_s": bsz * steps / seconds,
            "step_ms": 1000 * seconds / steps, "warmup_s": warmup_s,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if amp else None,
            "final_loss": float(loss)}


class Scorer:
    """ITC and fused ITM scores of a :class:`FiberModel` (eval mode) on cached bottoms."""

    def __init__(self, model: FiberModel, amp: bool, batch: int) -> None:
        self.model, self.amp, self.batch = model, amp, batch
        self.final_norms = model.cfg.fusion.final_norms == "keep"
        self.device_type = next(model.parameters()).device.type

    def autocast(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.amp)

    @torch.no_grad()
    def bottoms(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
        m, b = self.model, self.batch
        with self.autocast():
            x = torch.cat([image_bottom(m.image, m.pairs, images[s:s + b])
                           for s in range(0, images.shape[0], b)])
            h = torch.cat([text_bottom(m.text, m.pairs, ids[s:s + b], mask[s:s + b])
                           for s in range(0, ids.shape[0], b)])
        return x, h

    @torch.no_grad()
    def itc(self, x: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(I, T)`` cosine similarities of the dual encoder (the unfused tops)."""
        m, b = self.model, self.batch
        with self.autocast():
            img = torch.cat([m.itc.embed_image(unfused_top(m.image, m.text, m.pairs,
                                                           x=x[s:s + b])[0])
                             for s in range(0, x.shape[0], b)])
            txt = torch.cat([m.itc.embed_text(unfused_top(m.image, m.text, m.pairs, h=h[s:s + b],
                                                          attention_mask=mask[s:s + b])[1])
                             for s in range(0, h.shape[0], b)])
            return img @ txt.T

    @torch.no_grad()
    def itm(self, x, h, mask, ii: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        """``(P,)`` ITM margins of the pairs ``(ii[p], tt[p])`` from the cached bottoms."""
        m, b, out = self.model, self.batch, []
        with self.autocast():
            for s in range(0, ii.numel(), b):
                i, t = ii[s:s + b], tt[s:s + b]
                fused = fused_top(m.image, m.text, m.pairs, m.i2t, m.t2i, x[i], h[t], mask[t],
                                  self.final_norms)
                logits = m.itm_logits(m.cross_modal(fused.text, fused.image)[2])
                out.append(logits[:, 1] - logits[:, 0])
        return torch.cat(out)


def _timed(fn, device: torch.device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def retrieval(model: FiberModel, cfg, device: torch.device, n_img: int, per_image: int, k: int,
              sample: int, batch_pairs: int) -> dict:
    """Two-stage retrieval (measured end to end) and the full ITM ranking's rate (a sample)."""
    model.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    scorer = Scorer(model, device.type == "cuda", batch_pairs)
    g = torch.Generator().manual_seed(1)
    size, n_txt = cfg.model.visual.image_size, n_img * per_image
    images = torch.randn(n_img, 3, size, size, generator=g).to(device)
    ids, mask = (t.to(device) for t in random_texts(cfg, n_txt, g))
    k = min(k, n_img)

    def two_stage() -> tuple[torch.Tensor, torch.Tensor]:
        x, h = scorer.bottoms(images, ids, mask)
        sims = scorer.itc(x, h, mask)  # (I, T)
        t2i = sims.topk(k, dim=0).indices  # (k, T): each text's k best images
        i2t = sims.topk(k, dim=1).indices  # (I, k): each image's k best texts
        ii = torch.cat([t2i.flatten(), torch.arange(n_img, device=device).repeat_interleave(k)])
        tt = torch.cat([torch.arange(n_txt, device=device).repeat(k), i2t.flatten()])
        return sims, scorer.itm(x, h, mask, ii, tt)

    two_stage()  # warm-up: kernels, allocator
    (sims, reranked), seconds = _timed(two_stage, device)
    x, h = scorer.bottoms(images, ids, mask)
    _, bottoms_s = _timed(lambda: scorer.bottoms(images, ids, mask), device)
    _, itc_s = _timed(lambda: scorer.itc(x, h, mask), device)
    flat = torch.randperm(n_img * n_txt, generator=g)[:sample].to(device)
    ii, tt = flat // n_txt, flat % n_txt
    scores, itm_s = _timed(lambda: scorer.itm(x, h, mask, ii, tt), device)
    if not (bool(torch.isfinite(sims).all()) and bool(torch.isfinite(reranked).all())
            and bool(torch.isfinite(scores).all())):
        raise RuntimeError("non-finite retrieval scores")
    pairs, fused = n_img * n_txt, (n_img + n_txt) * k
    itm_rate = ii.numel() / itm_s
    bottom_rate = (n_img + n_txt) / bottoms_s  # images and texts per s (same count here)
    full_pairs, full_fused = FULL_IMAGES * FULL_CAPTIONS, (FULL_IMAGES + FULL_CAPTIONS) * FULL_K
    full_bottoms = (FULL_IMAGES + FULL_CAPTIONS) / bottom_rate
    itc_rate = pairs / itc_s
    return {
        "images": n_img, "captions": n_txt, "pairs": pairs, "rerank_k": k,
        "precision": "bf16" if scorer.amp else "fp32", "batch_pairs": batch_pairs,
        "two_stage_s": seconds, "two_stage_pairs_per_s": pairs / seconds,
        "two_stage_itm_pairs": fused, "itm_pairs_fraction": fused / pairs,
        "bottoms_s": bottoms_s, "itc_s": itc_s, "itc_pairs_per_s": itc_rate,
        "itm_sample_pairs": int(ii.numel()), "itm_pairs_per_s": itm_rate,
        "full_itm_projected_s": bottoms_s + pairs / itm_rate,
        "flickr30k_test_projected": {
            "images": FULL_IMAGES, "captions": FULL_CAPTIONS, "rerank_k": FULL_K,
            "two_stage_s": full_bottoms + full_pairs / itc_rate + full_fused / itm_rate,
            "full_itm_s": full_bottoms + full_pairs / itm_rate,
            "note": "projected from the measured rates of this run (bottoms per input, ITC "
                    "and ITM pairs/s), not measured at this size"},
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda" else None,
    }


def paper_pretrain(name: str, overrides: list[str], device: torch.device, bsz: int, steps: int,
                   warmup: int) -> dict:
    """``pretrain_throughput.py``'s ``vlparse-bf16`` (CPU: ``vlparse-fp32``) variant of the
    single-stream model, with its FLOPs per image-step."""
    cfg = load_config(name, overrides)
    vocab = 30522
    variant = "vlparse-bf16" if device.type == "cuda" else "vlparse-fp32"
    flops = count_flops(cfg, vocab, device, min(bsz, 4 if device.type == "cuda" else 1))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    r = run_variant(variant, cfg, vocab, device, bsz, steps, warmup)
    r.update(model=cfg.model.name, flops_per_image_step=flops,
             tflops_per_s=flops * r["images_per_s"] / 1e12)
    return r


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(SIZES), default="base",
                    help="base: fiber_base beside paper (GPU); tiny: fiber_tiny and tiny, "
                    "shrunk further (the CPU smoke run)")
    for name, kind in (("batch-size", int), ("steps", int), ("warmup", int), ("images", int),
                       ("captions-per-image", int), ("rerank-k", int), ("itm-sample", int),
                       ("batch-pairs", int)):
        ap.add_argument(f"--{name}", type=kind, default=None, help="default: per --config")
    ap.add_argument("--device", default=None, help="default: cuda")
    ap.add_argument("--out", default=None, help="results.json to write (after every part)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the FIBER config")
    args = ap.parse_args(argv)
    device = torch.device(args.device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU (or --config tiny --device cpu for a smoke run)")
    o = {k: v if getattr(args, k) is None else getattr(args, k)
         for k, v in DEFAULTS[args.config].items()}
    fiber_name, extra, paper_name, paper_extra = SIZES[args.config]
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = load_config(fiber_name, [*RANDOM_INIT, *extra, *args.overrides])
    report: dict = {"config": args.config, "fiber_config": fiber_name,
                    "paper_config": paper_name, "fiber_overrides": [*extra, *args.overrides],
                    "paper_overrides": paper_extra, "settings": o,
                    "initialisation": "random (speed does not depend on the weights)"}

    def save() -> dict:
        print(json.dumps(report, indent=1), flush=True)
        return write_results(args.out, script=__file__, topic="fiber-speed", device=device,
                             results=report, argv=argv,
                             question="How fast does FIBER pre-train beside the Visual Parsing "
                             "model in the same run, and how many pairs per second does its "
                             "two-stage retrieval rank?")

    # the single-stream model first, so that neither model's memory counts in the other's peak
    report["paper_pretrain"] = paper_pretrain(paper_name, paper_extra, device, o["batch_size"],
                                              o["steps"], o["warmup"])
    save()
    _free(device)
    torch.manual_seed(0)
    with device:  # initialised where it runs (fiber_base: faster than on the CPU)
        model = FiberModel(cfg.model, objectives=cfg.objectives)
    flops = fiber_flops(model, cfg, device, min(o["batch_size"], 4 if device.type == "cuda"
                                                else 2))
    _free(device)
    r = fiber_pretrain(model, cfg, device, o["batch_size"], o["steps"], o["warmup"])
    r.update(flops_per_image_step=flops, tflops_per_s=flops * r["images_per_s"] / 1e12)
    report["fiber_pretrain"] = r
    f, p = r, report["paper_pretrain"]
    report["fiber_vs_paper"] = {"images_per_s_ratio": f["images_per_s"] / p["images_per_s"],
                                "flops_per_image_ratio": f["flops_per_image_step"]
                                / p["flops_per_image_step"]}
    if f["peak_memory_gib"] and p.get("peak_memory_gib"):
        report["fiber_vs_paper"]["memory_ratio"] = f["peak_memory_gib"] / p["peak_memory_gib"]
    save()
    model.zero_grad(set_to_none=True)
    _free(device)
    report["retrieval"] = retrieval(model, cfg, device, o["images"], o["captions_per_image"],
                                    o["rerank_k"], o["itm_sample"], o["batch_pairs"])
    return save()


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
