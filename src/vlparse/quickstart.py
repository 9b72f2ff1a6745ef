"""``vlparse quickstart``: make a scene world, pre-train the ``tiny`` model on it, report held-out
ITM accuracy, MLM accuracy and zero-shot retrieval beside their chance levels, probe its
inter-modality flow, then fine-tune it for VQA and report the VQA score beside the
majority-answer baseline."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from vlparse.config import load_config
from vlparse.io.files import atomic_write_json

__all__ = ["run_quickstart"]


def run_quickstart(
    out: str | Path = "vlparse-quickstart",
    num_images: int = 3000,
    seed: int = 0,
    overrides: list[str] | None = None,
    workers: int | None = None,
    vqa_steps: int = 200,
    processes: int | None = None,
    prune_vocab: bool = True,
) -> dict:
    """Run the quickstart end to end; returns the summary written to ``out/summary.json``.

    ``vqa_steps`` bounds the VQA fine-tuning (the ``vqa_world`` recipe; 0 skips it) so that the
    whole quickstart stays within about 10 minutes on 2 CPU cores.

    ``processes``: pre-training processes (a local gloo group, one thread each on CPU); default
    2 on a CPU machine with at least 2 cores, else 1. ``prune_vocab``: pre-train with the
    tokenizer pruned to the scene world's texts (:func:`~vlparse.processing.tokenization.
    prune_tokenizer`, saved in ``out/tokenizer``; the same word pieces, about 120 instead of
    30,522 ids), which makes the small model's steps cheaper.
    """
    from vlparse.probing.run import run_probe
    from vlparse.tasks.pretrain_eval import format_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = _scene_world(out / "world", num_images, seed, workers)
    t_data = time.perf_counter() - t0
    cfg = _config(out, manifest, list(overrides or []), prune_vocab)
    run_dir = out / "pretrain"
    summary = _pretrain(cfg, manifest, run_dir, processes)
    held = summary["held_out"]
    print("[quickstart] probing inter-modality flow and NMI (figures in probe/)")
    run_probe([str(run_dir)], [cfg.model.name], manifest, out / "probe", num_samples=200,
              progress=cfg.train.progress)
    vqa = _finetune_vqa(run_dir, manifest, out / "vqa", vqa_steps, cfg.train.progress)
    report = {
        "scene_world": {"images": num_images, "seed": seed, "manifest": str(manifest)},
        "pretrain": {k: v for k, v in summary.items() if k != "held_out"},
        "held_out": held,
        "wall_s": {"data": t_data, "total": time.perf_counter() - t0},
        "curves": str(out / "loss_curves.png"),
        "probe": str(out / "probe"),
        "vqa": vqa,
    }
    if (run_dir / "loss_curves.png").exists():
        shutil.copy(run_dir / "loss_curves.png", out / "loss_curves.png")
    atomic_write_json(out / "summary.json", report)
    print("\n[quickstart] held-out results")
    print(format_report(held))
    if vqa is not None:
        print(
            f"  VQA score {100 * vqa['vqa_score']:.1f} (majority answer "
            f"{100 * vqa['majority_baseline']:.1f}) on {vqa['num_examples']} val questions, "
            f"after {vqa['steps']} fine-tuning steps"
        )
    print(f"[quickstart] summary: {out / 'summary.json'}; curves: {out / 'loss_curves.png'}")
    print(f"[quickstart] done in {report['wall_s']['total']:.0f} s")
    return report


def _scene_world(world: Path, num_images: int, seed: int, workers: int | None) -> Path:
    """The manifest of the scene world in ``world``: drawn, or reused when it was drawn with the
    same size and seed."""
    from vlparse.data.synthetic import generate

    manifest = world / "manifest.json"
    stamp = {"num_images": num_images, "seed": seed}
    stamp_file = world / "quickstart_stamp.json"
    if manifest.exists() and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        print(f"[quickstart] reusing scene world {world}")
        return manifest
    if world.exists():
        shutil.rmtree(world)
    print(f"[quickstart] drawing a scene world of {num_images} images into {world}")
    generate(world, num_images, seed=seed, image_size=128, workers=workers or os.cpu_count() or 1)
    atomic_write_json(stamp_file, stamp)
    return manifest


def _config(out: Path, manifest: Path, overrides: list[str], prune_vocab: bool):
    """The ``quickstart`` config, with the tokenizer pruned to the world's texts (saved in
    ``out/tokenizer``) when ``prune_vocab``."""
    from vlparse.data.manifest import load_manifest, manifest_texts
    from vlparse.processing.tokenization import build_tokenizer, prune_tokenizer

    cfg = load_config("quickstart", overrides)
    if not prune_vocab:
        return cfg
    texts = manifest_texts(load_manifest(manifest))
    tokenizer = build_tokenizer(cfg.model.text.tokenizer)
    vocab = prune_tokenizer(tokenizer, texts, (out / "tokenizer").resolve())
    print(f"[quickstart] tokenizer pruned to the world's {len(texts)} texts: {vocab}")
    return load_config("quickstart", [*overrides, f"model.text.tokenizer={vocab}"])


def _pretrain(cfg, manifest: Path, run_dir: Path, processes: int | None) -> dict:
    """Pre-train into a fresh ``run_dir`` in ``processes`` local processes (default: 2 on a
    CPU machine with 2+ cores, else 1); returns the run's summary."""
    import torch

    from vlparse.tasks.pretrain import run_pretrain
    from vlparse.train.distributed import run_local_processes

    if run_dir.exists():
        shutil.rmtree(run_dir)
    cores = os.cpu_count() or 1
    if processes is None:
        processes = 2 if cores >= 2 and not torch.cuda.is_available() else 1
    print(f"[quickstart] pre-training the '{cfg.model.name}' model for {cfg.train.max_steps} steps"
          + (f" in {processes} processes" if processes > 1 else ""))
    if processes == 1:
        return run_pretrain(cfg, manifest, run_dir)
    run_local_processes(run_pretrain, processes, (cfg, manifest, run_dir),
                        threads=max(1, cores // processes))
    return json.loads((run_dir / "summary.json").read_text())


def _finetune_vqa(
    init: Path, manifest: Path, out: Path, steps: int, progress: bool
) -> dict | None:
    """Fine-tune the pre-trained run for VQA (``vqa_world`` recipe, ``steps`` steps) and return
    the validation VQA score beside the majority-answer baseline."""
    if steps <= 0:
        return None
    from vlparse.config import FinetuneConfig
    from vlparse.tasks.finetune import run_finetune

    if out.exists():
        shutil.rmtree(out)
    print(f"[quickstart] fine-tuning VQA for {steps} steps")
    cfg = load_config(
        "vqa_world",
        [f"train.max_steps={steps}", f"train.progress={str(progress).lower()}",
         "task.eval_max_images=600"],
        cls=FinetuneConfig,
    )
    summary = run_finetune("vqa", cfg, manifest, out, init=init)
    val = summary["val"]
    return {
        "vqa_score": val["vqa_score"],
        "majority_baseline": val["majority_baseline"],
        "num_examples": int(val["num_examples"]),
        "steps": summary["steps"],
        "run": str(out),
    }
