"""``vlparse probe masks``: the attention-guided MFR mask figure (paper Figure 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlparse.cli import build_parser, build_probe_masks_parser, main
from vlparse.config import load_config
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.models.loading import load_run
from vlparse.models.visual_masking import attention_guided_mask, num_mfr_tokens
from vlparse.probing.masks import ANCHOR_COLOR, BLEND, MASK_COLOR, mask_rows, overlay_mask
from vlparse.processing import image_transform, load_image
from vlparse.tasks.pretrain import run_pretrain


@pytest.fixture(scope="module")
def tiny_run(scene_world, small_overrides, tmp_path_factory):
    """A 1-step pre-training run of the small tiny model on the scene world."""
    cfg = load_config("tiny", [*small_overrides, "train.max_steps=1"])
    run = tmp_path_factory.mktemp("masks") / "run"
    run_pretrain(cfg, scene_world, run, evaluate=False)
    return run


def test_probe_masks_cli_draws_attention_guided_masks(tiny_run, scene_world, tmp_path):
    out = tmp_path / "figs"
    argv = ["probe", "masks", "--checkpoint", str(tiny_run), "--data", str(scene_world)]
    assert main([*argv, "--out", str(out), "--images", "3", "--seed", "1"]) == 0
    png = out / "masks.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    side = json.loads((out / "masks.json").read_text())

    model, cfg, _ = load_run(tiny_run)
    m = model.num_visual_tokens
    k = num_mfr_tokens(m, cfg.objectives.mfr_k, cfg.objectives.mfr_ratio)
    assert side["k"] == k and side["grid"] == list(model.visual.grid_size)
    val = read_pretrain_records(load_manifest(scene_world), ["coco"], ["val"])
    assert len(side["rows"]) == min(3, len(val)) >= 1
    transform = image_transform(cfg.model.visual.image_size)
    paths = {str(r.image_path): r for r in val}
    for row in side["rows"]:
        assert row["caption"] in paths[row["image"]].captions
        image = transform(load_image(row["image"]))[None]
        with torch.no_grad():
            att = model.encode_image(image, output_attentions=True).attention
        anchor = torch.tensor([row["anchor"]])
        expected = attention_guided_mask(att.float(), anchor, k)[0]
        assert row["attention_mask"] == torch.nonzero(expected).flatten().tolist()
        assert len(row["random_mask"]) == k and row["anchor"] in row["random_mask"]


def test_mask_rows_are_seeded_and_overlay_shades_masked_cells(tiny_run, scene_world):
    model, cfg, _ = load_run(tiny_run)
    records = read_pretrain_records(load_manifest(scene_world), ["coco"], ["val", "test"])
    a = mask_rows(model, cfg, records, 4, seed=5)
    b = mask_rows(model, cfg, records, 4, seed=5)
    c = mask_rows(model, cfg, records, 4, seed=6)
    key = [(r.image_path, r.anchor, r.random_mask.tolist(), r.caption) for r in a]
    assert key == [(r.image_path, r.anchor, r.random_mask.tolist(), r.caption) for r in b]
    assert key != [(r.image_path, r.anchor, r.random_mask.tolist(), r.caption) for r in c]

    row = a[0]
    h, w = row.grid
    drawn = overlay_mask(row.image, row.attention_mask, row.grid, row.anchor)
    size = row.image.shape[0]
    assert drawn.shape == row.image.shape

    def cell(t: int) -> tuple[slice, slice]:
        r, col = divmod(t, w)
        return (slice(round(r * size / h), round((r + 1) * size / h)),
                slice(round(col * size / w), round((col + 1) * size / w)))

    for t in range(h * w):
        changed = not np.allclose(drawn[cell(t)], row.image[cell(t)])
        assert changed == bool(row.attention_mask[t]), f"token {t}"
    # the anchor is blended with red, the other masked tokens with blue
    for t in torch.nonzero(row.attention_mask).flatten().tolist():
        color = np.asarray(ANCHOR_COLOR if t == row.anchor else MASK_COLOR)
        expected = (1 - BLEND) * row.image[cell(t)] + BLEND * color
        assert np.allclose(drawn[cell(t)], expected), f"token {t}"


def test_probe_parsers_keep_the_old_form(scene_world, tmp_path, capsys):
    args = build_parser().parse_args(["probe", "--checkpoint", "a", "--data", "m", "--out", "o"])
    assert args.command == "probe" and args.checkpoint == ["a"]
    args = build_probe_masks_parser().parse_args(
        ["--checkpoint", "a", "--data", "m", "--out", "o", "--images", "2"]
    )
    assert args.images == 2 and args.seed == 0 and args.dataset == "coco"
    with pytest.raises(SystemExit):
        main(["probe", "masks", "--data", "m", "--out", "o"])  # --checkpoint missing
    argv = ["probe", "masks", "--checkpoint", str(tmp_path / "nope"), "--data", str(scene_world)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
