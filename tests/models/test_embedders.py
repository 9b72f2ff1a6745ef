"""The ResNet-grid and patch-projection embedders, the attention requirement of MFR, and FLOPs.

FLOPs convention: FlopCounterMode counts a multiply-add as 2 FLOPs; the published "FLOPs" of
ResNet-50 (4.1 G), ResNet-101 (7.8 G) and Swin-T (4.5 G) are multiply-adds (MACs), so they are
compared with ``gmacs``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from vlparse.config import VisualConfig, load_config
from vlparse.errors import ConfigError
from vlparse.models.flops import count_flops, describe_visual, format_model_info
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.visual import (
    PatchProjection,
    ResNetGrid,
    SwinParser,
    build_visual_embedder,
    require_attention,
)
from vlparse.objectives import pretrain_loss

V = 300

# a model small enough for a forward + backward of the whole pre-training step on the CPU
SMALL = [
    "model.visual.embed_dim=16", "model.visual.num_heads=[2]", "model.text.hidden_size=32",
    "model.text.num_layers=2", "model.text.num_heads=2", "model.text.intermediate_size=64",
    "model.text.max_text_len=12", "objectives.ipot_iters=5",
]
KIND_OVERRIDES = {
    "swin": [],
    "resnet": ["model.visual.kind=resnet", "model.visual.arch=resnet10t",
               "model.visual.image_size=64"],
    "patch": ["model.visual.kind=patch", "model.visual.patch_size=16"],
}


# ---------------------------------------------------------------------------- ResNet grid


@pytest.mark.parametrize("size, side", [(64, 2), (100, 4), (128, 4)])
def test_resnet_grid_tokens_are_the_last_feature_map(size: int, side: int) -> None:
    emb = ResNetGrid(VisualConfig(kind="resnet", arch="resnet10t", image_size=size)).eval()
    assert emb.grid_size == (side, side) and emb.num_tokens == side * side
    assert emb.out_dim == 512 and emb.has_attention is False
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = emb(images, output_attentions=True)
        feats = emb.model.forward_features(images)  # (B, 512, side, side)
    assert out.tokens.shape == (2, side * side, 512)
    assert out.grid_size == (side, side) and out.attention is None
    r, c = side - 1, side // 2  # token r * w + c is the map's pixel (r, c): row-major order
    torch.testing.assert_close(out.tokens[:, r * side + c], feats[:, :, r, c])


def test_resnet50_and_101_shapes_without_memory() -> None:
    for arch, size, side in (("resnet50", 224, 7), ("resnet101", 384, 12)):
        with torch.device("meta"):
            emb = build_visual_embedder(VisualConfig(kind="resnet", arch=arch, image_size=size))
        assert isinstance(emb, ResNetGrid)
        assert (emb.num_tokens, emb.out_dim, emb.grid_size) == (side**2, 2048, (side, side))
        out = emb(torch.zeros(2, 3, size, size, device="meta"))
        assert out.tokens.shape == (2, side**2, 2048)


def test_resnet_rejects_other_archs_and_image_sizes() -> None:
    with pytest.raises(ValueError, match="not a timm ResNet"), torch.device("meta"):
        ResNetGrid(VisualConfig(kind="resnet", arch="swin_tiny_patch4_window7_224"))
    emb = ResNetGrid(VisualConfig(kind="resnet", arch="resnet10t", image_size=64))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        emb(torch.randn(1, 3, 96, 96))


def test_resnet_loads_a_local_checkpoint(tmp_path) -> None:
    from safetensors.torch import save_file

    cfg = VisualConfig(kind="resnet", arch="resnet10t", image_size=64)
    src = ResNetGrid(cfg)
    state = {k: v.clone() for k, v in src.model.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    save_file(state, str(tmp_path / "r.safetensors"))
    dst = ResNetGrid(cfg)
    report = dst.load_pretrained(str(tmp_path / "r.safetensors"))
    assert report.missing == [] and report.unexpected == []
    assert any("fc.weight" in n for n in report.notes)
    torch.testing.assert_close(dst.model.conv1[0].weight, src.model.conv1[0].weight)
    with pytest.raises(FileNotFoundError, match="neither 'timm'"):
        dst.load_pretrained(str(tmp_path / "absent.pt"))


# ---------------------------------------------------------------------------- patch projection


@pytest.mark.parametrize("size, patch, side", [(224, 32, 7), (384, 32, 12), (96, 16, 6)])
def test_patch_projection_is_a_linear_map_of_each_patch(size: int, patch: int, side: int) -> None:
    emb = PatchProjection(VisualConfig(kind="patch", image_size=size, patch_size=patch,
                                       embed_dim=24))
    assert emb.grid_size == (side, side) and emb.num_tokens == side * side
    assert emb.out_dim == 24 and emb.has_attention is False
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = emb(images, output_attentions=True)
    assert out.tokens.shape == (2, side * side, 24) and out.attention is None
    r, c = side - 1, 1
    pix = images[:, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch].reshape(2, -1)
    expected = pix @ emb.model.weight.reshape(24, -1).T + emb.model.bias
    torch.testing.assert_close(out.tokens[:, r * side + c], expected, rtol=1e-4, atol=1e-4)


def test_patch_projection_width_and_divisibility() -> None:
    assert PatchProjection(VisualConfig(kind="patch")).out_dim == 768  # ViLT-B/32's width
    with pytest.raises(ValueError, match="divisible by patch_size"):
        PatchProjection(VisualConfig(kind="patch", image_size=100, patch_size=32))


def test_patch_projection_defaults_to_32_pixel_patches() -> None:
    emb = PatchProjection(VisualConfig(kind="patch", image_size=64, embed_dim=8))
    assert emb.grid_size == (2, 2)


def test_swin_patch_size_sets_the_patch_embedding_stride() -> None:
    cfg = VisualConfig(kind="swin", image_size=96, window_size=6, embed_dim=32, depths=[2],
                       num_heads=[2], patch_size=16, drop_path_rate=0.0)
    parser = SwinParser(cfg)
    assert parser.grid_size == (6, 6) and parser.out_dim == 32
    out = parser(torch.randn(2, 3, 96, 96), output_attentions=True)
    assert out.tokens.shape == (2, 36, 32) and out.attention.shape == (2, 36, 36)
    default = replace(cfg, patch_size=None, depths=[1, 1], num_heads=[2, 4])
    assert SwinParser(default).grid_size == (12, 12)


def test_patch_projection_loads_vit_style_keys(tmp_path) -> None:
    cfg = VisualConfig(kind="patch", image_size=64, patch_size=16, embed_dim=8)
    weight, bias = torch.randn(8, 3, 16, 16), torch.randn(8)
    path = tmp_path / "vit.pth"
    torch.save({"model": {"patch_embed.proj.weight": weight, "patch_embed.proj.bias": bias,
                          "blocks.0.norm1.weight": torch.ones(8)}}, path)
    emb = PatchProjection(cfg)
    report = emb.load_pretrained(str(path))
    assert report.missing == [] and report.unexpected == ["blocks.0.norm1.weight"]
    torch.testing.assert_close(emb.model.weight, weight)
    torch.testing.assert_close(emb.model.bias, bias)
    torch.save({"patch_embed.proj.weight": torch.randn(8, 3, 32, 32)}, path)
    with pytest.raises(ValueError, match="embed_dim and patch_size"):
        emb.load_pretrained(str(path))


# ---------------------------------------------------------------------------- in the full model


def _pretrain_batch(bsz: int, n_txt: int, length: int, m: int, size: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (bsz, n_txt, length), generator=g)
    mask = torch.ones_like(ids)
    mask[..., -3:] = 0
    ids = ids * mask
    labels = torch.full_like(ids, -100)
    labels[..., 1] = ids[..., 1]
    mlm_ids = ids.clone()
    mlm_ids[..., 1] = 103
    return {
        "image": torch.randn(bsz, 3, size, size, generator=g), "input_ids": ids,
        "attention_mask": mask, "mlm_input_ids": mlm_ids, "mlm_labels": labels,
        "mfr_noise": torch.rand(bsz, m, generator=g),
    }


@pytest.mark.parametrize("kind, mfr_mode", [("swin", "attention"), ("resnet", "random"),
                                            ("patch", "off")])
def test_pretrain_step_forward_backward_with_each_embedder(kind: str, mfr_mode: str) -> None:
    cfg = load_config("tiny", SMALL + KIND_OVERRIDES[kind] + [f"objectives.mfr_mode={mfr_mode}"])
    require_attention(cfg.model.visual, cfg.objectives.mfr_mode)  # passes for these pairs
    model = VisualParsingModel(cfg.model, 2048, objectives=cfg.objectives).train()
    expected = {"swin": SwinParser, "resnet": ResNetGrid, "patch": PatchProjection}[kind]
    assert isinstance(model.visual, expected)
    size = cfg.model.visual.image_size
    batch = _pretrain_batch(2, 4, 12, model.num_visual_tokens, size)
    out = model.forward_pretrain(batch)
    o = cfg.objectives
    losses = pretrain_loss(out, {"itm": 1.0, "vla": o.vla_weight, "mlm": 1.0, "mfr": o.lambda_mfr})
    assert torch.isfinite(losses.total)
    assert ("mfr" in losses.parts) == (mfr_mode != "off")
    assert mfr_mode == "off" or losses.parts["mfr"].item() > 0
    losses.total.backward()
    grads = [p.grad for p in model.visual.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    if mfr_mode != "off":
        assert model.visual_mask_token.grad is not None


@pytest.mark.parametrize("kind", ["resnet", "patch"])
def test_attention_guided_mfr_without_attention_fails_clearly(kind: str) -> None:
    cfg = load_config("tiny", KIND_OVERRIDES[kind])
    assert cfg.objectives.mfr_mode == "attention"  # the default asks for attention
    with pytest.raises(ConfigError, match=r"needs a visual embedder with attention.*random or off"):
        require_attention(cfg.model.visual, cfg.objectives.mfr_mode)
    for ok in ("random", "off"):
        require_attention(cfg.model.visual, ok)
    require_attention(VisualConfig(kind="swin"), "attention")


# ---------------------------------------------------------------------------- FLOPs


def test_count_flops_closed_form_and_training_flag() -> None:
    lin = nn.Linear(10, 6).train()
    counts = count_flops(lin, torch.zeros(4, 10))
    assert counts["flops"] == 2 * 4 * 10 * 6 and counts["macs"] == 4 * 10 * 6
    assert counts["params"] == 10 * 6 + 6 and lin.training


@pytest.mark.parametrize("kind, arch, published_gmacs", [
    ("resnet", "resnet50", 4.1), ("resnet", "resnet101", 7.8),
    ("swin", "swin_tiny_patch4_window7_224", 4.5),
])
def test_flops_match_published_gmacs_at_224(kind: str, arch: str, published_gmacs: float) -> None:
    d = describe_visual(VisualConfig(kind=kind, arch=arch, image_size=224))  # no weights
    assert abs(d["gmacs"] - published_gmacs) / published_gmacs < 0.05, d["gmacs"]
    assert d["flops"] == 2 * d["macs"] and d["tokens"] == 49


@pytest.mark.parametrize("size, patch, dim", [(224, 32, 768), (384, 32, 768), (96, 16, 40)])
def test_patch_projection_flops_equal_the_hand_formula(size: int, patch: int, dim: int) -> None:
    d = describe_visual(VisualConfig(kind="patch", image_size=size, patch_size=patch,
                                     embed_dim=dim))
    m = (size // patch) ** 2
    assert d["tokens"] == m and d["out_dim"] == dim
    assert d["macs"] == m * dim * 3 * patch * patch  # one (3 p^2 -> c) matrix product per patch
    assert d["params"] == dim * 3 * patch * patch + dim


def test_format_model_info_names_the_embedder_and_its_cost() -> None:
    text = format_model_info(load_config("tiny", KIND_OVERRIDES["patch"]))
    d = describe_visual(load_config("tiny", KIND_OVERRIDES["patch"]).model.visual)
    assert "kind=patch" in text and f"tokens m = {d['tokens']}" in text
    assert f"{d['gmacs']:.3f} GMACs" in text and "attention-guided MFR unavailable" in text


def test_builtin_weights_resolve_and_unknown_names_list_the_shipped_ones():
    from vlparse.models.weights import builtin_weights, existing_checkpoint

    shipped = builtin_weights()
    for name, path in shipped.items():
        assert existing_checkpoint(f"builtin:{name}") == path
        assert path.with_suffix(".json").is_file()  # how it was made
    with pytest.raises(FileNotFoundError, match="no built-in weights 'absent'"):
        existing_checkpoint("builtin:absent")


def test_the_quickstart_parser_loads_the_shipped_weights_completely():
    visual = load_config("quickstart").model.visual
    assert visual.pretrained == "builtin:tiny_parser"
    parser = build_visual_embedder(visual)
    report = parser.load_pretrained(visual.pretrained)
    assert report.missing == [] and report.unexpected == []
