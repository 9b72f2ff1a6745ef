"""FP8 against bf16 over a short training run: the loss curves of the same model, the same
initial weights and the same batches, once with torchao's FP8 layers
(:func:`vlparse.models.float8.convert_to_float8`) and once without, both under bf16 autocast.

The batches are a pool of synthetic ones (random images and token ids, as in
``pretrain_throughput.py``) cycled, so the loss falls as the model fits them. The verdict
compares the mean loss of the last ``--window`` steps: FP8 is within the tolerance when the
relative difference is at most ``--tolerance`` (default 2 %).

torchao is an optional dependency. Without it, ``--wheels DIR`` installs a torchao wheel found
there into a temporary folder (for machines without a package index); else the result says that
torchao is missing.

Usage (one GPU):
  python benchmarks/fp8_loss.py --config ablation --steps 200 --out fp8_loss.json
  python benchmarks/fp8_loss.py --config tiny --device cpu --steps 3 --batch-size 2  # smoke
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_throughput import make_batch, step_loss  # noqa: E402

from vlparse.config import load_config  # noqa: E402
from vlparse.io.files import atomic_write_json  # noqa: E402
from vlparse.models.float8 import convert_to_float8, float8_available  # noqa: E402
from vlparse.models.single_stream import VisualParsingModel  # noqa: E402


def find_torchao(wheels: str | None) -> str:
    """``"installed"``, ``"from wheel <name>"`` or ``"missing"``."""
    if float8_available():
        return "installed"
    found = sorted(Path(wheels).glob("torchao-*.whl")) if wheels else []
    if not found:
        return "missing"
    target = tempfile.mkdtemp(prefix="vlparse-torchao-")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           "--target", target, str(found[-1])]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        return "missing"
    sys.path.insert(0, target)
    return f"from wheel {found[-1].name}" if float8_available() else "missing"


def train_curve(cfg, fp8: bool, steps: int, bsz: int, pool: int, device: torch.device,
                seed: int) -> tuple[list[float], float]:
    """Losses of ``steps`` AdamW steps and the seconds they took."""
    torch.manual_seed(seed)
    model = VisualParsingModel(cfg.model, 30522, objectives=cfg.objectives)
    if fp8:
        convert_to_float8(model)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [make_batch(cfg, model.num_visual_tokens, bsz, 30522, device, seed=i)
               for i in range(pool)]
    losses = []
    t0 = time.perf_counter()
    for i in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = step_loss(model, batches[i % pool], cfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    losses = torch.stack(losses).tolist()
    return losses, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="ablation")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pool", type=int, default=8, help="distinct synthetic batches, cycled")
    ap.add_argument("--window", type=int, default=50, help="last steps compared")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--wheels", default=None, help="folder with a torchao wheel")
    ap.add_argument("--device", default=None, help="default: cuda if available")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    result: dict = {"config": args.config, "steps": args.steps, "batch_size": args.batch_size,
                    "torchao": find_torchao(args.wheels), "torch": torch.__version__}
    if result["torchao"] == "missing":
        result["verdict"] = "not run: torchao is not installed (carry its wheel: --wheels)"
    elif args.steps == 0:
        result["verdict"] = "not run: --steps 0 (torchao found)"
    else:
        cfg = load_config(args.config)
        curves = {}
        for name, fp8 in (("bf16", False), ("fp8", True)):
            curves[name], result[f"{name}_s"] = train_curve(
                cfg, fp8, args.steps, args.batch_size, args.pool, device, args.seed)
        w = min(args.window, args.steps)
        ref, ours = (sum(curves[k][-w:]) / w for k in ("bf16", "fp8"))
        rel = abs(ours - ref) / abs(ref)
        result.update(loss=curves, window=w, mean_loss_bf16=ref, mean_loss_fp8=ours,
                      relative_difference=rel, tolerance=args.tolerance,
                      verdict="within tolerance" if rel <= args.tolerance else "outside")
    print(json.dumps({k: v for k, v in result.items() if k != "loss"}, indent=1))
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
