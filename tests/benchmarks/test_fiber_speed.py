"""The FIBER speed benchmark on the CPU: its scorer on cached bottoms gives the model's own ITC
and fused ITM scores, and the smoke run writes a schema-valid ``results.json`` whose counts and
ratios follow from its settings."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from tests.test_repository import _schema, schema_errors
from vlparse.config import load_config

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("fiber_speed", BENCH / "fiber_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load()


def test_scores_on_cached_bottoms_are_the_models_own(bench):
    fiber_name, extra, _, _ = bench.SIZES["tiny"]
    cfg = load_config(fiber_name, [*bench.RANDOM_INIT, *extra])
    torch.manual_seed(0)
    model = bench.FiberModel(cfg.model, objectives=cfg.objectives).eval()
    with torch.no_grad():  # gates away from 0, so that the fused scores differ from the dual
        for cross in (*model.i2t, *model.t2i):
            cross.gate.fill_(0.5)
    g = torch.Generator().manual_seed(0)
    size = cfg.model.visual.image_size
    images = torch.randn(3, 3, size, size, generator=g)
    ids, mask = bench.random_texts(cfg, 4, g)
    assert bool((ids[mask == 0] == cfg.model.text.pad_token_id).all())
    scorer = bench.Scorer(model, amp=False, batch=2)  # batches smaller than the inputs
    x, h = scorer.bottoms(images, ids, mask)
    with torch.no_grad():
        img = model.encode_image(images).embeds
        txt = model.encode_text(ids, mask).embeds
        assert torch.allclose(scorer.itc(x, h, mask), img @ txt.T, atol=1e-5)
        ii, tt = torch.tensor([0, 2, 1, 2, 0]), torch.tensor([3, 0, 1, 2, 1])
        out = model(images[ii], ids[tt], mask[tt])
        logits = model.itm_logits(out.pooler_output)
        want = logits[:, 1] - logits[:, 0]
        assert torch.allclose(scorer.itm(x, h, mask, ii, tt), want, atol=1e-5)


def test_cpu_smoke_run(bench, tmp_path):
    out = tmp_path / "fiber_speed.json"
    record = bench.main(["--config", "tiny", "--device", "cpu", "--out", str(out)])
    assert schema_errors(json.loads(out.read_text()), _schema()) == []
    assert record["topic"] == "fiber-speed"
    r = record["results"]
    f, p, ret = r["fiber_pretrain"], r["paper_pretrain"], r["retrieval"]
    assert (f["model"], p["model"]) == ("fiber_tiny", "tiny")
    for part in (f, p):
        assert part["images_per_s"] > 0 and part["flops_per_image_step"] > 0
        assert part["tflops_per_s"] == pytest.approx(
            part["flops_per_image_step"] * part["images_per_s"] / 1e12)
    assert r["fiber_vs_paper"]["images_per_s_ratio"] == pytest.approx(
        f["images_per_s"] / p["images_per_s"])
    s = r["settings"]
    n_img, n_txt, k = s["images"], s["images"] * s["captions_per_image"], s["rerank_k"]
    assert ret["pairs"] == n_img * n_txt and ret["two_stage_itm_pairs"] == (n_img + n_txt) * k
    assert ret["itm_sample_pairs"] == s["itm_sample"]
    assert ret["two_stage_pairs_per_s"] == pytest.approx(ret["pairs"] / ret["two_stage_s"])
