"""MFR with Eq. 9's reduction beside MLM and ITM at `paper` size: one batch of 2 images, random
weights, the CPU. Writes the report's results.json.

    python reports/2026-12-03-mfr-loss-scale/mfr_loss_scale.py --out results.json --seeds 3

Each seed draws its own initialisation (train.seed) and batch (images 2s and 2s+1 of a 20-image
scene world drawn at 128 px and resized to 384 px by the paper's transform). The pre-trained
sources are turned off (random weights): model.visual.pretrained=null model.text.pretrained=null.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from vlparse.config import load_config
from vlparse.data.synthetic import generate
from vlparse.objectives import pretrain_loss
from vlparse.tasks.pretrain import PretrainTask, loss_weights
from vlparse.utils import seed_everything

OFF = ["model.visual.pretrained=null", "model.text.pretrained=null", "data.num_workers=0"]


def _grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def measure(manifest: Path, seed: int) -> dict:
    cfg = load_config("paper", [*OFF, f"train.seed={seed}"])
    o = cfg.objectives
    task = PretrainTask(cfg, manifest, evaluate=False, log=None)
    seed_everything(seed)
    model = task.build_model().train()
    data = task.train_dataset()
    batch = task.collate([data[2 * seed], data[2 * seed + 1]])
    t0 = time.perf_counter()
    out = model.forward_pretrain(batch)
    parts = pretrain_loss(out, loss_weights(cfg, 1.0)).parts
    c = model.visual_dim
    weighted = {"mlm": parts["mlm"], "itm": o.lambda_itm * parts["itm"],
                "vla": o.lambda_itm * o.vla_weight * parts["vla"],
                "mfr": o.lambda_mfr * parts["mfr"]}
    total = sum(weighted.values())
    groups = {"multimodal_transformer": list(model.encoder.parameters()),
              "visual_parser": list(model.visual.parameters())}
    terms = {"mlm": weighted["mlm"], "itm_and_vla": weighted["itm"] + weighted["vla"],
             "mfr": weighted["mfr"]}
    grads = {g: {t: _grad_norm(loss, ps) for t, loss in terms.items()}
             for g, ps in groups.items()}
    target = out.mfr_target.float()
    return {
        "seed": seed,
        "visual_tokens_m": model.num_visual_tokens, "visual_width_c": c,
        "masked_tokens_per_pair_k": out.mfr_pred.shape[0] // (2 * o.num_pos),
        "matched_pairs": 2 * o.num_pos,
        "loss": {k: float(v.detach()) for k, v in parts.items()},
        "mfr_mean_channel": float(parts["mfr"].detach()) / c,
        "weighted": {k: float(v.detach()) for k, v in weighted.items()},
        "weighted_total": float(total.detach()),
        "mfr_share_of_total": float(weighted["mfr"].detach() / total.detach()),
        "target_squared_norm_per_token": float((target ** 2).sum(-1).mean()),
        "prediction_squared_norm_per_token": float((out.mfr_pred.detach().float() ** 2)
                                                   .sum(-1).mean()),
        "grad_norm": grads,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate(Path(tmp) / "world", 20, seed=0, image_size=128, progress=False)
        runs = [measure(manifest, s) for s in range(args.seeds)]
    git = ["git", "-C", str(Path(__file__).parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "src"]).returncode != 0
    record = {
        "topic": "mfr-loss-scale",
        "question": "At paper size, does lambda2 x MFR (Eq. 9, summed over the k masked tokens "
                    "and their channels) dominate MLM and lambda1 x ITM on a batch?",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit, "dirty": dirty,
        "hardware": "2 CPU cores, shared",
        "software": {"torch": torch.__version__},
        "commands": [f"python reports/2026-12-03-mfr-loss-scale/mfr_loss_scale.py --out "
                     f"results.json --seeds {args.seeds}"],
        "results": {"config": "paper with " + " ".join(OFF[:2]), "runs": runs},
        "notes": "Random weights: the scale at initialisation, before any training.",
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({r["seed"]: r["weighted"] for r in runs}, indent=1))


if __name__ == "__main__":
    main()
