"""Probe adapters on randomly initialised tiny models (no weights are downloaded)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlparse.probing.adapters import ProbeInputs, probe_vilt, probe_visualbert, probe_vlparse
from vlparse.probing.imf import inter_modality_flow
from vlparse.probing.nmi import modality_nmi

transformers = pytest.importorskip("transformers")


def _check_probes(p: ProbeInputs, num_layers: int) -> None:
    """Shapes agree and both probes run end to end with sane values."""
    batch, tokens = p.modality.shape
    assert p.num_layers == num_layers
    assert len(p.hidden_states) == num_layers + 1
    for att in p.attentions:
        assert att.shape[0] == batch and att.shape[-2:] == (tokens, tokens)
    for hs in p.hidden_states:
        assert hs.shape[:2] == (batch, tokens)
    # padded keys get no attention from real queries
    for att in p.attentions:
        for b in range(batch):
            real = p.modality[b] >= 0
            to_pad = att[b].sum(dim=0)[real][:, ~real]
            assert to_pad.numel() == 0 or float(to_pad.abs().max()) < 1e-5
    flow = inter_modality_flow(p.attentions, p.modality)
    assert flow.shape == (num_layers, num_layers)
    for i in range(num_layers):
        for j in range(i, num_layers):
            v = float(flow[i, j])
            assert math.isfinite(v) and 0.0 < v < 1.0
    nmi = modality_nmi(p.hidden_states, p.modality)
    assert nmi.shape == (num_layers + 1,)
    assert torch.isfinite(nmi).all()
    assert ((nmi >= 0) & (nmi <= 1 + 1e-9)).all()


def _tiny_hf_model(name: str, **config: int) -> nn.Module:
    """A 2-layer, 32-wide ``transformers.<name>Model`` with eager attention, seeded."""
    cfg = getattr(transformers, f"{name}Config")(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        **config,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return getattr(transformers, f"{name}Model")(cfg).eval()


@pytest.fixture
def vilt() -> nn.Module:
    return _tiny_hf_model(
        "Vilt", image_size=32, patch_size=16, max_image_length=-1, max_position_embeddings=16
    )


@pytest.fixture
def visualbert() -> nn.Module:
    return _tiny_hf_model("VisualBert", visual_embedding_dim=8, max_position_embeddings=32)


def test_vilt_layout_and_padding(vilt):
    ids = torch.randint(1, 100, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0  # two padded text tokens in sample 1
    pixel_mask = torch.ones(2, 32, 32, dtype=torch.long)
    pixel_mask[1, :, 16:] = 0  # sample 1: right half of the image is padding -> 2 of 4 patches
    p = probe_vilt(
        vilt,
        input_ids=ids,
        attention_mask=mask,
        pixel_values=torch.randn(2, 3, 32, 32),
        pixel_mask=pixel_mask,
    )
    # 6 text tokens, then image [CLS] + 4 patches
    assert p.modality.shape == (2, 11)
    assert p.modality.dtype == torch.long
    assert (p.modality[:, :6] != 1).all() and (p.modality[:, 6:] != 0).all()
    assert (p.modality[0] == 0).sum() == 6 and (p.modality[0] == 1).sum() == 5
    assert (p.modality[1] == 0).sum() == 4 and (p.modality[1] == 1).sum() == 3
    assert (p.modality[1] == -1).sum() == 4
    assert p.modality[1, 4:6].tolist() == [-1, -1]
    assert p.modality[1, 6] == 1  # image [CLS] is vision
    # padded image positions in the returned modality are exactly those ViLT masked out
    att = p.attentions[0][1].sum(dim=0)  # (N, N) heads summed, sample 1
    pad_cols = att[0] == 0
    assert torch.equal(pad_cols, p.modality[1] == -1)
    _check_probes(p, 2)


def test_vilt_rejects_wrong_model():
    with pytest.raises(TypeError, match="ViltModel"):
        probe_vilt(nn.Linear(2, 2), input_ids=torch.zeros(1, 2, dtype=torch.long))


def test_visualbert_layout_and_padding(visualbert):
    ids = torch.randint(1, 100, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[2, 3:] = 0
    vis_mask = torch.ones(3, 7, dtype=torch.long)
    vis_mask[1, 5:] = 0
    p = probe_visualbert(
        visualbert,
        input_ids=ids,
        attention_mask=mask,
        visual_embeds=torch.randn(3, 7, 8),
        visual_attention_mask=vis_mask,
    )
    assert p.modality.shape == (3, 12)
    assert p.modality[0].tolist() == [0] * 5 + [1] * 7
    assert p.modality[1].tolist() == [0] * 5 + [1] * 5 + [-1] * 2
    assert p.modality[2].tolist() == [0] * 3 + [-1] * 2 + [1] * 7
    _check_probes(p, 2)


def test_visualbert_needs_visual_embeds_and_no_bypass(visualbert):
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="visual_embeds"):
        probe_visualbert(visualbert, input_ids=ids)
    visualbert.config.bypass_transformer = True
    with pytest.raises(ValueError, match="bypass_transformer"):
        probe_visualbert(visualbert, input_ids=ids, visual_embeds=torch.randn(1, 2, 8))


def test_vlparse_tiny(small_overrides):
    from vlparse.config import load_config
    from vlparse.models.single_stream import VisualParsingModel

    cfg = load_config("tiny", small_overrides)
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 1000).eval()
    size = cfg.model.visual.image_size
    ids = torch.randint(200, 1000, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    p = probe_vlparse(model, torch.randn(2, 3, size, size), ids, mask)
    m = model.num_visual_tokens
    assert p.modality.shape == (2, 2 + m + 6)
    assert (p.modality == 1).sum(dim=1).tolist() == [m, m]
    assert (p.modality == 0).sum(dim=1).tolist() == [8, 6]
    assert (p.modality == -1).sum(dim=1).tolist() == [0, 2]
    _check_probes(p, cfg.model.text.num_layers)
