"""Overhead of ``vlparse probe`` over a plain evaluation pass of the same samples.

The plain pass is the fused model's forward (visual parser + multi-modal Transformer) over N
image-caption pairs with no attentions asked for, so the Transformer runs SDPA. The probe pass
is the library's own loop, :func:`vlparse.probing.run.probe_batches` (what ``vlparse probe``
runs per checkpoint): the forward with attentions and hidden states (explicit softmax
attention), the IMF rollout and the batched torch 2-means NMI, both accumulated on the device,
and the two results read back once at the end. Both passes run under bf16 autocast on a GPU
(fp32 on the CPU) and see the same batches.

Data are synthetic: a pool of a few random batches (normal images, random token ids with random
padding) reused cyclically on the device, so neither disk nor decoding is measured (the same
for both passes). The model is randomly initialised (timing does not depend on the weights).

The parts are also timed separately, each over all N samples with a device sync around it: the
forward with attentions, the IMF update and the NMI update. ``--nmi-samples K`` gives only the
first K samples to the NMI probe (e.g. with ``--nmi-backend sklearn``, ~1 s per sample at
``paper`` size on the CPU) and extrapolates its time to all N (the JSON says so); by default
every sample goes through it and nothing is extrapolated.

Usage (one GPU; the goal is a ratio of at most 1.20 over 10,000 samples):
  python benchmarks/probe_overhead.py --config paper --num-samples 10000 --batch-size 64 \\
      --out probe_overhead.json
Smoke test on the CPU:
  python benchmarks/probe_overhead.py --config tiny --num-samples 64
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import write_results  # noqa: E402

from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.probing import IMFAccumulator, NMIAccumulator, probe_vlparse
from vlparse.probing.run import probe_batches

GOAL_RATIO = 1.20


def make_pool(cfg, batch_size: int, vocab: int, device: torch.device, pool: int, seed: int):
    """``pool`` synthetic batches ``(images (B,3,S,S), input_ids (B,L), attention_mask (B,L))``."""
    g = torch.Generator().manual_seed(seed)
    s, length = cfg.model.visual.image_size, cfg.model.text.max_text_len
    out = []
    for _ in range(pool):
        ids = torch.randint(1000, vocab, (batch_size, length), generator=g)
        lengths = torch.randint(max(1, length // 2), length + 1, (batch_size,), generator=g)
        mask = (torch.arange(length)[None] < lengths[:, None]).long()
        images = torch.randn(batch_size, 3, s, s, generator=g)
        out.append((images.to(device), (ids * mask).to(device), mask.to(device)))
    return out


def batches(pool: list, num_samples: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Cycle through ``pool`` until ``num_samples`` samples were given (last batch cut)."""
    done, i = 0, 0
    while done < num_samples:
        images, ids, mask = pool[i % len(pool)]
        n = min(images.shape[0], num_samples - done)
        yield images[:n], ids[:n], mask[:n]
        done, i = done + n, i + 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = load_config(args.config, args.overrides)
    vocab = cfg.model.text.vocab_size or 30522
    torch.manual_seed(args.seed)
    model = VisualParsingModel(cfg.model, vocab).to(device).eval()
    use_bf16 = device.type == "cuda"

    def amp():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    pool = make_pool(cfg, args.batch_size, vocab, device, args.pool, args.seed)
    n = args.num_samples
    nmi_n = n if args.nmi_samples is None else min(args.nmi_samples, n)
    layers = cfg.model.text.num_layers

    def plain_pass(num: int) -> float:
        sync(device)
        t = time.perf_counter()
        with torch.no_grad(), amp():
            for images, ids, mask in batches(pool, num):
                model(images, ids, mask)
        sync(device)
        return time.perf_counter() - t

    def probe_pass(num: int, nmi_limit: int) -> float:
        """The library's loop, read back once at the end, as ``vlparse probe`` does."""
        sync(device)
        t = time.perf_counter()
        imf, nmi = probe_batches(
            model, batches(pool, num), autocast=use_bf16, nmi_backend=args.nmi_backend,
            nmi_samples=nmi_limit,
        )
        imf.compute()
        nmi.compute()
        sync(device)
        return time.perf_counter() - t

    def parts_pass(num: int, nmi_limit: int) -> dict[str, float]:
        """Each part timed alone with a device sync around it."""
        parts = dict.fromkeys(["forward_with_attentions", "imf_update", "nmi_update"], 0.0)
        imf = IMFAccumulator(layers)
        nmi = NMIAccumulator(layers + 1, backend=args.nmi_backend)
        done = 0
        for images, ids, mask in batches(pool, num):
            sync(device)
            t0 = time.perf_counter()
            with amp():
                probe = probe_vlparse(model, images, ids, mask)
            sync(device)
            t1 = time.perf_counter()
            imf.update(probe.attentions, probe.modality)
            sync(device)
            t2 = time.perf_counter()
            take = min(images.shape[0], nmi_limit - done)
            if take > 0:
                nmi.update([h[:take] for h in probe.hidden_states], probe.modality[:take])
                done += take
            sync(device)
            t3 = time.perf_counter()
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                parts[key] += dt
        imf.compute()
        nmi.compute()
        return parts

    # warm-up: kernels, autotuning, allocator
    warm = min(n, args.batch_size * args.warmup)
    if warm > 0:
        plain_pass(warm)
        probe_pass(warm, min(warm, nmi_n))
        parts_pass(min(warm, args.batch_size), 1)

    plain_s = plain_pass(n)
    probe_measured_s = probe_pass(n, nmi_n)
    parts = parts_pass(n, nmi_n)
    nmi_per_sample = parts["nmi_update"] / max(nmi_n, 1)
    probe_s = probe_measured_s + nmi_per_sample * (n - nmi_n)
    parts["nmi_update"] += nmi_per_sample * (n - nmi_n)
    return {
        "config": args.config,
        "overrides": args.overrides,
        "num_samples": n,
        "batch_size": args.batch_size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "dtype": "bf16 autocast" if use_bf16 else "fp32",
        "nmi_backend": args.nmi_backend,
        "tokens": 2 + model.num_visual_tokens + cfg.model.text.max_text_len,
        "layers": layers,
        "data": f"synthetic: {args.pool} random batches reused cyclically, random init model",
        "plain_s": plain_s,
        "plain_samples_per_s": n / plain_s,
        "probe_s": probe_s,
        "probe_measured_s": probe_measured_s,
        "probe_samples_per_s": n / probe_s,
        "nmi_samples": nmi_n,
        "nmi_extrapolated": nmi_n < n,
        "nmi_ms_per_sample": 1000 * nmi_per_sample,
        "overhead_ratio": probe_s / plain_s,
        "goal_ratio": GOAL_RATIO,
        "meets_goal": probe_s / plain_s <= GOAL_RATIO,
        "parts_s": parts,
        "parts_note": "each part over all samples with a device sync around it (the probe pass "
        "has none, so its parts overlap); nmi_update is extrapolated from nmi_samples when "
        "nmi_extrapolated",
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="paper", help="built-in config name or YAML")
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if present)")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.add_argument("--nmi-samples", type=int, default=None,
                   help="samples given to the NMI probe, its time extrapolated to all "
                   "(default: all samples, nothing extrapolated)")
    p.add_argument("--nmi-backend", choices=["torch", "sklearn"], default="torch",
                   help="2-means of the NMI probe: batched torch on the device (default, as "
                   "vlparse probe) or scikit-learn on the CPU")
    p.add_argument("--pool", type=int, default=4, help="distinct synthetic batches")
    p.add_argument("--warmup", type=int, default=2, help="warm-up batches per pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = p.parse_args(argv)
    if min(args.num_samples, args.batch_size, args.pool) < 1 or args.warmup < 0 or (
        args.nmi_samples is not None and args.nmi_samples < 1
    ):
        p.error("--num-samples, --batch-size, --nmi-samples, --pool must be >= 1, --warmup >= 0")
    result = run(args)
    parts = result["parts_s"]
    print(f"{result['config']} on {result['device']} ({result['dtype']}), N = "
          f"{result['num_samples']}, batch {result['batch_size']}, {result['tokens']} tokens, "
          f"NMI backend {result['nmi_backend']}")
    print(f"plain pass            {result['plain_s']:9.2f} s  "
          f"({result['plain_samples_per_s']:.1f} samples/s)")
    extra = (f", NMI on {result['nmi_samples']} samples, extrapolated"
             if result["nmi_extrapolated"] else "")
    print(f"probe pass            {result['probe_s']:9.2f} s  "
          f"({result['probe_samples_per_s']:.1f} samples/s{extra})")
    print(f"overhead ratio        {result['overhead_ratio']:9.2f}   (goal <= {GOAL_RATIO})")
    for key, val in parts.items():
        print(f"  part {key:24s} {val:9.2f} s")
    if args.out:
        write_results(args.out, script=__file__, topic="probe-overhead",
                      device=result["device"], results=result, argv=argv,
                      question="How much longer than a plain evaluation pass does the probe "
                      "pass take over the same samples?")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
