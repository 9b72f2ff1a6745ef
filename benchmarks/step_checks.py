"""Two checks of the pre-training step on the device at hand, for the GPU evidence command.

1. Attention kernels: which ``scaled_dot_product_attention`` kernel torch picks for the
   encoder's shapes (``T`` sequences of ``N`` tokens, bf16, dropout 0.1) with no mask, a
   boolean key-padding mask, an additive float bias of another layout, and the bias vlparse
   makes (:func:`vlparse.models.transformer.key_padding_bias`), and the forward + backward time
   of each; then each kernel forced alone on vlparse's bias (accepted or not, and its time).
2. Host synchronisation: one training step of the model with ``set_static_shapes`` under
   ``torch.cuda.set_sync_debug_mode("error")`` (any synchronising call fails), and the same
   without static shapes, where the boolean MLM gather should be caught. On a CPU the step runs
   on the meta device instead, where a read-back or a data-dependent size fails.

Usage:
  python benchmarks/step_checks.py --config paper --out step_checks.json     # one GPU
  python benchmarks/step_checks.py --config tiny --device cpu                # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_throughput import make_batch, step_loss  # noqa: E402

from vlparse.config import load_config  # noqa: E402
from vlparse.io.files import atomic_write_json  # noqa: E402
from vlparse.models.single_stream import VisualParsingModel  # noqa: E402
from vlparse.models.transformer import key_padding_bias  # noqa: E402


def _masks(t: int, n: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    keep = torch.ones(t, n, dtype=torch.bool)
    lengths = torch.randint(n - 20, n, (t,), generator=g)
    keep &= torch.arange(n)[None] < lengths[:, None]
    keep = keep.to(device)
    float_bias = torch.zeros(t, 1, 1, n, dtype=torch.bfloat16, device=device)
    float_bias.masked_fill_(~keep[:, None, None], float("-inf"))
    return {"none": None, "bool": keep[:, None, None, :], "float_contiguous": float_bias,
            "vlparse_bias": key_padding_bias(keep, torch.bfloat16)}


def _time(fn, repeats: int = 10) -> float:
    times = []
    for i in range(repeats + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def attention_kernels(t: int, heads: int, n: int, d: int, device: torch.device) -> dict:
    """The kernel picked per mask kind and its fwd+bwd time (ms); each kernel forced alone."""
    q, k, v = (torch.randn(t, heads, n, d, device=device, dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    out: dict = {"shape": [t, heads, n, d], "dropout_p": 0.1, "picked": {}, "forced": {}}

    def run(mask):
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.1).sum().backward()

    masks = _masks(t, n, device)
    for name, mask in masks.items():
        choice = torch._fused_sdp_choice(q, k, v, mask, 0.1, False)
        out["picked"][name] = {"kernel": SDPBackend(choice).name, "fwd_bwd_ms": _time(
            lambda m=mask: run(m))}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH):
        for name in ("none", "vlparse_bias"):
            key = f"{backend.name}/{name}"
            try:
                with sdpa_kernel([backend]):
                    out["forced"][key] = {"fwd_bwd_ms": _time(lambda m=masks[name]: run(m), 5)}
            except RuntimeError as e:
                out["forced"][key] = {"refused": str(e).splitlines()[0][:200]}
    return out


def _where(error: BaseException, frames: int = 6) -> list[str]:
    """The innermost ``frames`` frames of ``error``'s traceback as ``file:line function``, the
    paths cut below the repository or ``site-packages`` so that the record names no machine."""
    out = []
    for frame in traceback.extract_tb(error.__traceback__)[-frames:]:
        path = frame.filename.replace("\\", "/")
        for cut in ("/site-packages/", "/src/", "/benchmarks/"):
            if cut in path:
                path = path.split(cut, 1)[1]
                break
        out.append(f"{path}:{frame.lineno} {frame.name}")
    return out


def sync_check(cfg, device: torch.device) -> dict:
    """One training step under the sync debug mode (CUDA) or on the meta device (CPU)."""
    result = {}
    for static in (True, False):
        key = "static_shapes" if static else "boolean_gathers"
        meta = device.type != "cuda"
        with torch.device("meta") if meta else torch.device(device):
            model = VisualParsingModel(cfg.model, 30522, objectives=cfg.objectives)
        model.set_static_shapes(static)
        batch = make_batch(cfg, model.num_visual_tokens, 2, 30522, torch.device("cpu"))
        batch = {k: v.to("meta" if meta else device) for k, v in batch.items()}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=not meta)
        try:
            if not meta:
                step_loss(model, batch, cfg).backward()  # warm-up outside the check
                torch.cuda.synchronize(device)
                torch.cuda.set_sync_debug_mode("error")
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not meta):
                loss = step_loss(model, batch, cfg)
            loss.backward()
            if not meta:
                opt.step()
            result[key] = "no synchronisation"
        except Exception as e:  # what synchronised, for the record
            result[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            result[f"{key}_where"] = _where(e)
        finally:
            if not meta:
                torch.cuda.set_sync_debug_mode(0)
    result["how"] = "cuda sync debug mode 'error'" if device.type == "cuda" else "meta device"
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="paper")
    ap.add_argument("--sync-config", default=None, help="config of the sync check "
                    "(default: --config)")
    ap.add_argument("--device", default=None, help="default: cuda if available")
    ap.add_argument("--sequences", type=int, default=256, help="T of the attention check")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = load_config(args.config)
    t = cfg.model.text
    n = 2 + VisualParsingModel(cfg.model, 30522).num_visual_tokens + t.max_text_len
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__}
    if device.type == "cuda":
        result["attention"] = attention_kernels(args.sequences, t.num_heads, n,
                                                t.hidden_size // t.num_heads, device)
    else:
        result["attention"] = "needs a CUDA device"
    result["sync"] = sync_check(load_config(args.sync_config or args.config), device)
    print(json.dumps(result, indent=1))
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
