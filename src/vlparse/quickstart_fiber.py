"""``vlparse quickstart --model fiber``: make a scene world, pre-train FIBER (the
``fiber_quickstart`` config: ``fiber_tiny`` shrunk for 2 CPU cores) with ITC, ITM with hard
negatives and MLM, report held-out ITC retrieval both ways, ITM and MLM beside chance, then
fine-tune it for VQA and report the VQA score beside the majority-answer baseline."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from vlparse.config import load_config
from vlparse.io.files import atomic_write_json
from vlparse.quickstart import _pretrain, _scene_world  # the steps both quickstarts share

__all__ = ["CONFIG", "VQA_RECIPE", "format_fiber_report", "run_fiber_quickstart"]

CONFIG = "fiber_quickstart"
VQA_RECIPE = "vqa_fiber_world"


def run_fiber_quickstart(
    out: str | Path = "vlparse-quickstart-fiber",
    num_images: int = 3000,
    seed: int = 0,
    overrides: list[str] | None = None,
    workers: int | None = None,
    vqa_steps: int = 200,
    processes: int | None = None,
    prune_vocab: bool = True,
) -> dict:
    """Run the FIBER quickstart end to end; returns the summary written to
    ``out/summary.json``. Arguments as :func:`vlparse.quickstart.run_quickstart`'s; the
    tokenizer is pruned to the world's texts unless ``prune_vocab`` is off (the config's text
    backbone starts from random weights, so it needs no pretrained vocabulary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = _scene_world(out / "world", num_images, seed, workers)
    t_data = time.perf_counter() - t0
    cfg = _config(out, manifest, list(overrides or []), prune_vocab)
    run_dir = out / "pretrain"
    summary = _pretrain(cfg, manifest, run_dir, processes)
    t_pre = time.perf_counter() - t0 - t_data
    vqa = _finetune_vqa(run_dir, manifest, out / "vqa", vqa_steps, cfg.train.progress)
    report = {
        "model": cfg.model.name,
        "scene_world": {"images": num_images, "seed": seed, "manifest": str(manifest)},
        "pretrain": {k: v for k, v in summary.items() if k != "held_out"},
        "held_out": summary["held_out"],
        "wall_s": {"data": t_data, "pretrain": t_pre, "total": time.perf_counter() - t0},
        "curves": str(out / "loss_curves.png"),
        "vqa": vqa,
    }
    if (run_dir / "loss_curves.png").exists():
        shutil.copy(run_dir / "loss_curves.png", out / "loss_curves.png")
    atomic_write_json(out / "summary.json", report)
    print("\n[quickstart] held-out results (FIBER)")
    print(format_fiber_report(summary["held_out"], vqa))
    print(f"[quickstart] summary: {out / 'summary.json'}; curves: {out / 'loss_curves.png'}")
    print(f"[quickstart] done in {report['wall_s']['total']:.0f} s")
    return report


def format_fiber_report(held: dict, vqa: dict | None = None) -> str:
    """Human-readable lines 'metric value (chance c)' of the FIBER quickstart."""
    lines = [
        f"ITC TR R@1        {held['i2t_r1']:.3f}  (image to text, chance "
        f"{held['i2t_r1_chance']:.3f}, {held['retrieval_images']} images)",
        f"ITC IR R@1        {held['t2i_r1']:.3f}  (text to image, same chance)",
        f"ITM accuracy      {held['itm_acc']:.3f}  (random negatives, chance "
        f"{held['itm_chance']:.3f})",
    ]
    if "itm_hard_acc" in held:
        lines.append(f"ITM accuracy      {held['itm_hard_acc']:.3f}  (hard negatives, chance "
                     f"{held['itm_hard_chance']:.3f})")
    lines.append(f"MLM accuracy      {held['mlm_acc']:.3f}  (majority token "
                 f"{held['mlm_chance']:.3f}, with a wrong image "
                 f"{held['mlm_acc_wrong_image']:.3f})")
    if vqa is not None:
        lines.append(f"VQA score         {vqa['vqa_score']:.3f}  (majority answer "
                     f"{vqa['majority_baseline']:.3f}, {vqa['num_examples']} val questions, "
                     f"{vqa['steps']} fine-tuning steps)")
    return "\n".join(lines)


def _config(out: Path, manifest: Path, overrides: list[str], prune_vocab: bool):
    """The :data:`CONFIG` config; with ``prune_vocab`` the tokenizer pruned to the world's texts
    (saved in ``out/tokenizer``) and the text backbone's vocabulary sized to it."""
    from vlparse.data.manifest import load_manifest, manifest_texts
    from vlparse.processing.tokenization import build_tokenizer, prune_tokenizer

    cfg = load_config(CONFIG, overrides)
    if not prune_vocab:
        return cfg
    texts = manifest_texts(load_manifest(manifest))
    folder = prune_tokenizer(build_tokenizer(cfg.model.text.tokenizer), texts,
                             (out / "tokenizer").resolve())
    size = len(build_tokenizer(str(folder)))
    print(f"[quickstart] tokenizer pruned to the world's {len(texts)} texts: {size} tokens")
    return load_config(CONFIG, [*overrides, f"model.text.tokenizer={folder}",
                                f"model.text.vocab_size={size}"])


def _finetune_vqa(init: Path, manifest: Path, out: Path, steps: int,
                  progress: bool) -> dict | None:
    """Fine-tune the pre-trained run for VQA (:data:`VQA_RECIPE`, ``steps`` steps); the
    validation VQA score beside the majority-answer baseline."""
    if steps <= 0:
        return None
    from vlparse.config import FinetuneConfig
    from vlparse.tasks.finetune import run_finetune

    if out.exists():
        shutil.rmtree(out)
    print(f"[quickstart] fine-tuning VQA for {steps} steps")
    cfg = load_config(VQA_RECIPE, [f"train.max_steps={steps}",
                                   f"train.progress={str(progress).lower()}",
                                   "task.eval_max_images=600"], cls=FinetuneConfig)
    summary = run_finetune("vqa", cfg, manifest, out, init=init)
    val = summary["val"]
    return {"vqa_score": val["vqa_score"], "majority_baseline": val["majority_baseline"],
            "num_examples": int(val["num_examples"]), "steps": summary["steps"],
            "run": str(out)}
