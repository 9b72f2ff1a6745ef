"""Supervised pre-training of the visual parser on scene-world attributes.

The paper starts its visual parser from ImageNet-pretrained Swin weights. Offline there is no
ImageNet and no hub, and a Swin trained from random initialisation inside the CPU quickstart learns
too slowly to give the fusion Transformer anything to bind words to (held-out ITM stayed at chance;
see ``reports/2026-11-22-cpu-itm-learnability/``). This module is the stand-in: a short
classification pre-training of the parser on scenes drawn by the built-in generator, with a seed of
its own so that none of its images is in a world made with another seed.

Task (multi-label, like ImageNet classification but with several objects per image): for each
image the labels are the colours and the shapes of its objects, its background texture, and the
(colour, shape) pairs of its objects, ``8 + 6 + 4 + 48 = 66`` binary labels. Each visual token
goes through one shared Linear classifier and an image's score for a label is the maximum over its
tokens (multiple-instance learning), so every token learns about what lies in its own cell: that
is what the multi-modal Transformer attends to.
Loss: binary cross-entropy; AdamW with linear warm-up and cosine decay; horizontal flips.

The result is a timm-format Swin state dict (``.safetensors``) that ``model.visual.pretrained``
loads, and a JSON file beside it with the held-out accuracies and how it was made.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from vlparse.config import VisualConfig
from vlparse.data.synthetic.render import render_scene
from vlparse.data.synthetic.scenes import BACKGROUNDS, COLORS, SHAPES, Scene, sample_scene
from vlparse.errors import ConfigError
from vlparse.models.visual import build_visual_embedder
from vlparse.processing.transforms import image_transform

__all__ = [
    "ParserPretrainConfig",
    "attribute_labels",
    "label_names",
    "scene_attribute_data",
    "pretrain_parser",
]


@dataclass
class ParserPretrainConfig:
    """Settings of :func:`pretrain_parser` (defaults: the run that made the shipped weights).

    ``images`` scenes are drawn with ``seed`` at ``scene_size`` pixels; the last ``val_images``
    are held out. ``steps`` AdamW steps of ``batch_size`` images at ``lr`` (warm-up
    ``warmup_steps``, then cosine to 0), weight decay ``weight_decay``.
    """

    images: int = 10000
    val_images: int = 1000
    seed: int = 1
    scene_size: int = 128
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30


def _label_groups() -> dict[str, list[str]]:
    """The label names by group, in the order of :func:`label_names`."""
    return {
        "color": list(COLORS),
        "shape": list(SHAPES),
        "background": list(BACKGROUNDS),
        "pair": [f"{c} {s}" for c in COLORS for s in SHAPES],
    }


def label_names() -> list[str]:
    """The 66 label names: colours, shapes, backgrounds, then ``"<colour> <shape>"`` pairs."""
    return [name for group in _label_groups().values() for name in group]


def attribute_labels(scene: Scene) -> Tensor:
    """``(66,)`` float multi-hot labels of ``scene`` in the order of :func:`label_names`."""
    index = {name: i for i, name in enumerate(label_names())}
    y = torch.zeros(len(index))
    y[index[scene.background]] = 1.0
    for o in scene.objects:
        for name in (o.color, o.shape, f"{o.color} {o.shape}"):
            y[index[name]] = 1.0
    return y


def scene_attribute_data(
    num_images: int, seed: int, image_size: int, scene_size: int = 128, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """Draw ``num_images`` scenes (the generator's scene ``i`` of ``seed``) and their labels.

    Returns:
        ``images (N, 3, image_size, image_size)`` normalised like the pre-training data, and
        ``labels (N, 66)``.
    """
    transform = image_transform(image_size)
    images = torch.empty(num_images, 3, image_size, image_size)
    labels = torch.empty(num_images, len(label_names()))
    for i in tqdm(range(num_images), desc="drawing scenes", disable=not progress, leave=False):
        scene = sample_scene(np.random.default_rng([seed, i, 0]), scene_size)
        images[i] = transform(render_scene(scene))
        labels[i] = attribute_labels(scene)
    return images, labels


def _scores(parser: nn.Module, head: nn.Linear, images: Tensor) -> Tensor:
    """``(B, 66)`` image scores: the per-token classifier maxed over the tokens."""
    return head(parser(images).tokens).amax(1)


@torch.no_grad()
def _evaluate(parser: nn.Module, head: nn.Linear, images: Tensor, labels: Tensor) -> dict:
    parser.eval()
    pred = torch.cat([_scores(parser, head, x) > 0 for x in images.split(128)])
    parser.train()
    right = (pred == labels.bool()).float()
    report, lo = {}, 0
    for name, group in _label_groups().items():
        hi = lo + len(group)
        report[f"{name}_acc"] = right[:, lo:hi].mean().item()
        # the best constant answer per label (always present / always absent)
        share = labels[:, lo:hi].mean(0)
        report[f"{name}_prior_acc"] = torch.maximum(share, 1 - share).mean().item()
        lo = hi
    return report


def pretrain_parser(
    visual: VisualConfig,
    out: str | Path,
    cfg: ParserPretrainConfig | None = None,
    progress: bool = True,
) -> dict:
    """Train the parser described by ``visual`` on scene attributes and save it.

    Args:
        visual: the parser to train (its ``pretrained`` is ignored: training starts from a random
            initialisation seeded with ``cfg.seed``).
        out: the ``.safetensors`` file to write; ``<out without suffix>.json`` gets the report.
        cfg: the training settings.
        progress: show progress bars.

    Returns:
        The report: held-out accuracies before and after, the settings, the wall time.
    """
    cfg = cfg or ParserPretrainConfig()
    if not 0 < cfg.val_images < cfg.images:
        raise ConfigError(
            f"parser pre-training needs 0 < val_images < images, got {cfg.val_images} "
            f"and {cfg.images}"
        )
    if visual.kind != "swin":
        raise ConfigError(f"parser pre-training is for the Swin parser, got kind={visual.kind!r}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {out}")
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    parser = build_visual_embedder(replace(visual, pretrained=None))
    head = nn.Linear(parser.out_dim, len(label_names()))
    images, labels = scene_attribute_data(
        cfg.images, cfg.seed, visual.image_size, cfg.scene_size, progress
    )
    n_train = cfg.images - cfg.val_images
    val = (images[n_train:], labels[n_train:])
    before = _evaluate(parser, head, *val)
    opt = torch.optim.AdamW(
        [*parser.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(1, cfg.steps + 1), desc="parser pre-training", disable=not progress)
    losses: list[float] = []
    for step in bar:
        warm = min(1.0, step / max(cfg.warmup_steps, 1))
        for group in opt.param_groups:
            group["lr"] = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        idx = torch.randint(0, n_train, (cfg.batch_size,), generator=gen)
        x = images[idx]
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)  # left/right swaps keep every attribute label
        loss = F.binary_cross_entropy_with_logits(_scores(parser, head, x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    after = _evaluate(parser, head, *val)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in parser.model.state_dict().items()}, str(out))
    report = {
        "weights": out.name,
        "visual": asdict(visual),
        "settings": asdict(cfg),
        "labels": len(label_names()),
        "held_out_before": before,
        "held_out_after": after,
        "first_train_loss": float(np.mean(losses[:10])) if losses else None,
        "final_train_loss": float(np.mean(losses[-10:])) if losses else None,
        "wall_s": time.time() - t0,
        "torch": torch.__version__,
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report
