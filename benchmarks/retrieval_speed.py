"""Retrieval evaluation speed: image-caption pairs scored per second by the full-ranking scorer
of ``vlparse.tasks.retrieval`` (visual parser once per image, tokens cached, pairs in large
batches cut to their longest caption, bf16 autocast on GPU), and the projected time of a
1,000 x 5,000 full ranking (Flickr30K test: 1,000 images, 5,000 captions).

Baseline, measured in the same run: the naive scorer that runs the visual parser again for
every pair (``naive_scores``), on a sample of pairs.

The model is randomly initialised (speed does not depend on the weights); images are random
tensors and captions random word pieces whose lengths are drawn uniformly from
``--min-words`` .. ``--max-words`` (Flickr30K captions: about 12-16 word pieces), plus [SEP].
Data loading is not measured. Goal on one H100 at ``paper`` size: >= 14,000 pairs/s. ``--out``
gets a ``results.json`` of ``reports/results.schema.json`` (see
``reports/2026-11-23-retrieval-speed/``).

Usage:
  python benchmarks/retrieval_speed.py --config paper --images 200 --batch-pairs 4096 \
      --out results.json                                          # one GPU
  python benchmarks/retrieval_speed.py --config tiny --images 8 --naive-pairs 16   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import write_results  # noqa: E402

from vlparse.config import FinetuneConfig, load_config  # noqa: E402
from vlparse.models.single_stream import VisualParsingModel  # noqa: E402
from vlparse.models.vp_tasks import VisualParsingForRetrieval  # noqa: E402
from vlparse.tasks.retrieval import score_matrix  # noqa: E402
from vlparse.utils import autocast as precision_autocast  # noqa: E402
from vlparse.utils import autocast_dtype  # noqa: E402

FULL_IMAGES, FULL_CAPTIONS = 1000, 5000
GOAL_PAIRS_PER_S = 14000


@torch.no_grad()
def naive_scores(model, images, input_ids, attention_mask, image_index, text_index,
                 batch_pairs: int = 64, autocast=None) -> torch.Tensor:
    """The baseline scorer: the visual parser runs again for every pair. Returns ``(P,)``."""
    out = []
    for s in range(0, image_index.numel(), batch_pairs):
        ii, tt = image_index[s : s + batch_pairs], text_index[s : s + batch_pairs]
        with autocast or nullcontext():
            tokens = model.encode_images(images[ii])
            out.append(model.match_scores(tokens, input_ids[tt], attention_mask[tt]))
    return torch.cat(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="paper", help="model config: paper, tiny, ... or YAML")
    ap.add_argument("--images", type=int, default=200, help="images ranked (I)")
    ap.add_argument("--captions-per-image", type=int, default=5, help="T = I x this")
    ap.add_argument("--batch-pairs", type=int, default=4096, help="pairs per forward pass")
    ap.add_argument("--image-batch", type=int, default=64, help="images per parser pass")
    ap.add_argument("--naive-pairs", type=int, default=512, help="pairs for the baseline")
    ap.add_argument("--naive-batch", type=int, default=64, help="pairs per baseline pass")
    ap.add_argument("--min-words", type=int, default=10)
    ap.add_argument("--max-words", type=int, default=18)
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile parser and encoder")
    ap.add_argument("--device", default=None, help="default: cuda if available")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file for the result")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = load_config(None, [f"model_from={args.config}"], cls=FinetuneConfig)
    torch.manual_seed(args.seed)
    backbone = VisualParsingModel(cfg.model, 30522)
    model = VisualParsingForRetrieval(backbone, init_from_itm=True).to(device).eval()
    if args.compile:
        model.compile_backbone()
    bf16 = autocast_dtype(args.precision, device) is not None
    autocast = lambda: precision_autocast(args.precision, device)

    g = torch.Generator().manual_seed(args.seed)
    size, max_len = cfg.model.visual.image_size, cfg.model.text.max_text_len
    n_img = args.images
    n_txt = n_img * args.captions_per_image
    images = torch.randn(n_img, 3, size, size, generator=g).to(device)
    words = torch.randint(args.min_words, args.max_words + 1, (n_txt,), generator=g)
    lengths = (words + 1).clamp(max=max_len)  # + [SEP]
    mask = (torch.arange(max_len)[None] < lengths[:, None]).long()
    ids = (torch.randint(1000, 30000, (n_txt, max_len), generator=g) * mask).to(device)
    mask = mask.to(device)

    def parse() -> torch.Tensor:
        with torch.no_grad(), autocast():
            return torch.cat([model.encode_images(images[s : s + args.image_batch])
                              for s in range(0, n_img, args.image_batch)])

    def rank(tokens: torch.Tensor) -> torch.Tensor:
        return score_matrix(model, tokens, ids, mask, batch_pairs=args.batch_pairs,
                            autocast=autocast())

    # warm-up (kernels, autotuning, compile) on a slice
    warm_tokens = parse()
    score_matrix(model, warm_tokens[: min(n_img, 4)], ids[: args.captions_per_image * 4],
                 mask[: args.captions_per_image * 4], batch_pairs=args.batch_pairs,
                 autocast=autocast())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokens, parser_s = _timed(parse, device)
    scores, scoring_s = _timed(lambda: rank(tokens), device)
    assert torch.isfinite(scores).all()
    pairs = n_img * n_txt
    pairs_per_s = pairs / scoring_s
    images_per_s = n_img / parser_s
    end_to_end = pairs / (parser_s + scoring_s)

    n_naive = min(args.naive_pairs, pairs)
    sel = torch.randperm(pairs, generator=g)[:n_naive].to(device)
    ii, tt = sel // n_txt, sel % n_txt
    naive_scores(model, images, ids, mask, ii[: args.naive_batch], tt[: args.naive_batch],
                 args.naive_batch, autocast())  # warm-up
    naive, naive_s = _timed(lambda: naive_scores(model, images, ids, mask, ii, tt,
                                                 args.naive_batch, autocast()), device)
    naive_pps = n_naive / naive_s
    max_diff = float((naive - scores[ii, tt]).abs().max())

    full_pairs = FULL_IMAGES * FULL_CAPTIONS
    projected = FULL_IMAGES / images_per_s + full_pairs / pairs_per_s
    cuda = device.type == "cuda"
    result = {
        "config": args.config,
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "precision": "bf16" if bf16 else "fp32",
        "compile": args.compile,
        "images": n_img,
        "captions": n_txt,
        "pairs": pairs,
        "visual_tokens": backbone.num_visual_tokens,
        "mean_caption_tokens": float(lengths.float().mean()),
        "batch_pairs": args.batch_pairs,
        "parser_images_per_s": images_per_s,
        "pairs_per_s": pairs_per_s,
        "pairs_per_s_with_parser": end_to_end,
        "projected_full_ranking_s": projected,
        "projected_full_ranking_min": projected / 60,
        "goal_pairs_per_s": GOAL_PAIRS_PER_S,
        "meets_goal": pairs_per_s >= GOAL_PAIRS_PER_S,
        "baseline_naive_pairs_per_s": naive_pps,
        "baseline_naive_pairs": n_naive,
        "baseline_projected_full_ranking_min": full_pairs / naive_pps / 60,
        "speedup_vs_naive": pairs_per_s / naive_pps,
        "max_abs_diff_vs_naive": max_diff,
        "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda" else None,
    }
    print(json.dumps(result, indent=2))
    write_results(args.out, script=__file__, topic="retrieval-speed", device=device,
                  results=result, argv=argv,
                  question="How many image-caption pairs per second does the full-ranking "
                  "scorer score, against a naive scorer that reruns the parser for every pair?")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
