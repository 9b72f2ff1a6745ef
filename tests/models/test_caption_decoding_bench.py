"""``benchmarks/caption_decoding.py``: its BERT decoder follows the decoding protocol over
transformers' caches (cache = no cache), and the script writes its JSON for the BERT decoder and
for FIBER's (the default)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from vlparse.models.generation import beam_search, greedy_search

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "caption_decoding.py"
TINY = dict(images=3, layers=2, width=32, heads=2, vocab=40, image_tokens=6, max_length=12)


def _load():
    spec = importlib.util.spec_from_file_location("caption_decoding", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bert():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    decoder, memory, batch = _load().bert_decoder(argparse.Namespace(**TINY))
    with torch.no_grad():  # larger weights: captions that differ between images and beams
        for p in decoder.model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
        decoder.model.cls.predictions.bias[decoder.eos_token_id] += 1.0  # some captions end
        memory = decoder.encode(memory["tokens"])
    return decoder, memory, batch


def test_bert_cached_steps_give_the_full_pass_logits(bert):
    decoder, memory, batch = bert
    rows = torch.arange(batch)
    ids = torch.randint(3, 40, (batch, 6))
    with torch.no_grad():
        full = decoder.full(ids, memory, rows)
        state = decoder.init_cache(memory, rows)
        for t in range(6):
            logits, state = decoder.step(ids[:, t : t + 1], state)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


def test_bert_decoding_with_cache_equals_without(bert):
    decoder, memory, batch = bert
    for search, kwargs in ((greedy_search, {}), (beam_search, {"num_beams": 4})):
        a = search(decoder, memory, batch, max_length=12, use_cache=True, **kwargs)
        b = search(decoder, memory, batch, max_length=12, use_cache=False, **kwargs)
        assert torch.equal(a.sequences, b.sequences) and torch.equal(a.lengths, b.lengths)
    assert (a.lengths < 12).any() and len(set(a.lengths.tolist())) > 1


def test_benchmark_writes_its_json(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "caption_decoding.json"
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    _load().main([*argv, "--decoder", "bert", "--beams", "2", "--max-length", "4", "--repeats",
                  "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["same_captions"] is True
    assert set(saved["captions_per_s"]) == {"cache", "no_cache"}
    assert saved["hardware"]["torch"] == torch.__version__ and saved["commit"]


def test_benchmark_runs_the_fiber_decoder(tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    out = tmp_path / "fiber.json"
    small = ["text.num_layers=2", "text.hidden_size=32", "text.num_heads=2",
             "text.intermediate_size=64", "fusion.num_layers=1", "visual.image_size=32"]
    argv = [f"--set={kv}" for kv in small]
    result = _load().main([*argv, "--images", "2", "--beams", "2", "--max-length", "3",
                           "--repeats", "1", "--out", str(out)])
    assert result["settings"]["decoder"] == "fiber" and result["same_captions"] is True
    assert json.loads(out.read_text())["mean_length"] == result["mean_length"]
