"""Smoke test of ``benchmarks/probe_overhead.py``: tiny config, 64 samples, CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "probe_overhead.py"


def _load():
    spec = importlib.util.spec_from_file_location("probe_overhead", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_overhead_runs_tiny_on_cpu(tmp_path, small_overrides):
    bench = _load()
    out = tmp_path / "probe_overhead.json"
    model_overrides = [o for o in small_overrides if o.startswith("model.")]
    argv = ["--config", "tiny", "--num-samples", "64", "--batch-size", "32", "--device", "cpu"]
    argv += ["--nmi-samples", "3", "--warmup", "0", "--pool", "2", "--out", str(out)]
    result = bench.main([*argv, *model_overrides])
    saved = json.loads(out.read_text())
    assert saved["num_samples"] == 64 and saved["batch_size"] == 32
    assert saved["nmi_samples"] == 3 and saved["nmi_extrapolated"] is True
    assert saved["device"] == "cpu" and saved["dtype"] == "fp32"
    # 6 x 6 visual tokens of the small parser + [CLS] + [SEP] + 20 text positions
    assert saved["tokens"] == 2 + 36 + 20 and saved["layers"] == 2
    assert saved["plain_s"] > 0 and saved["probe_measured_s"] > 0
    # the extrapolated NMI time is added on top of what was measured
    extra = saved["nmi_ms_per_sample"] / 1000 * (64 - 3)
    assert saved["probe_s"] == pytest.approx(saved["probe_measured_s"] + extra, rel=1e-6)
    assert saved["overhead_ratio"] == pytest.approx(saved["probe_s"] / saved["plain_s"])
    assert set(saved["parts_s"]) == {
        "forward_with_attentions", "imf_update", "hidden_states_to_cpu", "gpu_2means_nmi",
        "nmi_update_cpu_kmeans",
    }
    assert all(v >= 0 for v in saved["parts_s"].values())
    assert result["meets_goal"] == (saved["overhead_ratio"] <= 1.2)


def test_gpu_two_means_nmi_what_if_separates_and_mixes():
    bench = _load()
    g = torch.Generator().manual_seed(0)
    modality = torch.tensor([[0, 1, 1, 1, 0, 0, 1, -1]] * 2)
    # state 0: vision and language far apart -> NMI 1; a second call: modalities interleaved on
    # a line so that 2-means splits left/right independent of modality -> NMI 0
    noise = 0.01 * torch.randn(2, 8, 4, generator=g)
    apart = torch.where(modality[..., None] == 1, 10.0, -10.0) + noise
    x = torch.tensor([-4.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0])
    perm_mod = torch.tensor([[0, 1, 0, 1, 0, 1, 0, 1]] * 2)
    line = torch.zeros(2, 8, 4)
    line[..., 0] = x
    nmi = bench.gpu_two_means_nmi([apart, apart], modality)
    assert torch.allclose(nmi, torch.ones(2, 2), atol=1e-5)
    nmi_mixed = bench.gpu_two_means_nmi([line], perm_mod)
    assert torch.allclose(nmi_mixed, torch.zeros(2, 1), atol=1e-5)
