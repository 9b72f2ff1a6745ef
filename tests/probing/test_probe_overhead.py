"""Smoke tests of ``benchmarks/probe_overhead.py``: tiny config, a few samples, CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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
    argv = ["--config", "tiny", "--num-samples", "32", "--batch-size", "16", "--device", "cpu"]
    argv += ["--warmup", "0", "--pool", "2", "--out", str(out)]
    result = bench.main([*argv, *model_overrides])
    record = json.loads(out.read_text())  # results.json-shaped: the numbers under "results"
    assert record["topic"] == "probe-overhead" and record["commands"][0].startswith("python ")
    saved = record["results"]
    assert saved["num_samples"] == 32 and saved["batch_size"] == 16
    # by default every sample goes through the NMI probe: nothing extrapolated
    assert saved["nmi_samples"] == 32 and saved["nmi_extrapolated"] is False
    assert saved["nmi_backend"] == "torch"
    assert saved["device"] == "cpu" and saved["dtype"] == "fp32"
    # 6 x 6 visual tokens of the small parser + [CLS] + [SEP] + 20 text positions
    assert saved["tokens"] == 2 + 36 + 20 and saved["layers"] == 2
    assert saved["plain_s"] > 0 and saved["probe_s"] == saved["probe_measured_s"] > 0
    assert saved["overhead_ratio"] == pytest.approx(saved["probe_s"] / saved["plain_s"])
    assert set(saved["parts_s"]) == {"forward_with_attentions", "imf_update", "nmi_update"}
    assert all(v > 0 for v in saved["parts_s"].values())
    assert result["meets_goal"] == (saved["overhead_ratio"] <= 1.2)


def test_probe_overhead_extrapolates_a_partial_nmi(tmp_path, small_overrides):
    bench = _load()
    model_overrides = [o for o in small_overrides if o.startswith("model.")]
    argv = ["--config", "tiny", "--num-samples", "16", "--batch-size", "8", "--device", "cpu"]
    argv += ["--warmup", "0", "--pool", "1", "--nmi-samples", "3"]
    saved = bench.main([*argv, *model_overrides])
    assert saved["nmi_samples"] == 3 and saved["nmi_extrapolated"] is True
    extra = saved["nmi_ms_per_sample"] / 1000 * (16 - 3)
    assert saved["probe_s"] == pytest.approx(saved["probe_measured_s"] + extra, rel=1e-6)
