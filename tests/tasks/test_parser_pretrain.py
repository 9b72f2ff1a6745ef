"""Parser pre-training on scene attributes: labels, a short run, and loading its weights."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch

from vlparse.cli import main
from vlparse.config import VisualConfig
from vlparse.data.synthetic.scenes import (
    BACKGROUNDS,
    COLORS,
    SHAPES,
    Scene,
    SceneObject,
    sample_scene,
)
from vlparse.models.visual import build_visual_embedder
from vlparse.tasks.parser_pretrain import (
    ParserPretrainConfig,
    attribute_labels,
    label_names,
    pretrain_parser,
)

SMALL = VisualConfig(kind="swin", image_size=32, window_size=2, embed_dim=16, depths=[1],
                     num_heads=[2], patch_size=16, drop_path_rate=0.0)


def test_attribute_labels_name_each_object():
    base = sample_scene(np.random.default_rng(0), 128)
    objs = (SceneObject("star", "red", "small", 20, 20, 8),
            SceneObject("circle", "blue", "large", 80, 80, 16),
            SceneObject("star", "blue", "small", 40, 90, 8))
    scene = Scene(128, objs, base.background, base.bg_colors, base.bg_period, base.bg_angle,
                  base.bg_seed)
    y = attribute_labels(scene)
    on = {name for name, v in zip(label_names(), y.tolist(), strict=True) if v}
    assert on == {"red", "blue", "star", "circle", "red star", "blue circle", "blue star",
                  base.background}
    assert len(label_names()) == (len(COLORS) + len(SHAPES) + len(BACKGROUNDS)
                                  + len(COLORS) * len(SHAPES))


def test_short_run_learns_and_its_weights_load(tmp_path):
    out = tmp_path / "parser.safetensors"
    cfg = ParserPretrainConfig(images=120, val_images=20, steps=40, batch_size=16, lr=3e-3,
                               warmup_steps=5)
    report = pretrain_parser(SMALL, out, cfg, progress=False)
    assert report["final_train_loss"] < report["first_train_loss"] - 0.1
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["settings"]["steps"] == 40 and 0 <= saved["held_out_after"]["color_acc"] <= 1

    fresh = build_visual_embedder(replace(SMALL, pretrained=str(out)))
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    rep = fresh.load_pretrained(str(out))
    assert not rep.missing and not rep.unexpected
    changed = [k for k, v in fresh.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the trained weights differ from a fresh initialisation


def test_cli_rejects_a_non_swin_parser(tmp_path, capsys):
    code = main(["pretrain-parser", "--out", str(tmp_path / "p.safetensors"), "--steps", "1",
                 "--images", "20", "--no-progress", "model.visual.kind=patch"])
    assert code == 2
    assert "Swin parser" in capsys.readouterr().err

