"""The GPU evidence command, tested on the CPU: ``--cpu-smoke`` shrinks every part, runs them
all, and leaves at most 8 files that can be committed as they are; a part that does not fit the
time left is skipped and recorded."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

from tests.test_repository import _schema, schema_errors

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_evidence.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_evidence", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks the module up
    spec.loader.exec_module(module)
    return module


def test_a_part_that_does_not_fit_is_skipped_and_recorded(tmp_path):
    evidence = _load()
    record = evidence.main([str(tmp_path / "out"), "--cpu-smoke", "--parts", "probe,fiber",
                            "--budget-s", "1", "--scratch", str(tmp_path / "s")])
    probe = record["parts"]["probe"]
    assert probe["status"] == "skipped" and "needs about 20 s" in probe["reason"]
    assert record["parts"]["fiber"]["status"] == "skipped"
    saved = json.loads((tmp_path / "out" / "evidence.json").read_text())
    assert schema_errors(saved, _schema()) == [] and saved["topic"] == "gpu-evidence"
    assert saved["results"]["parts"] == record["parts"]
    assert saved["results"]["environment"]["mode"] == "cpu smoke"
    assert saved["commands"] == ["python benchmarks/gpu_evidence.py OUTDIR --cpu-smoke --parts "
                                 "probe,fiber --budget-s 1 --scratch SCRATCH"]


@pytest.mark.slow
def test_cpu_smoke_runs_every_part(tmp_path):
    evidence = _load()
    out = tmp_path / "out"
    record = evidence.main([str(out), "--cpu-smoke", "--budget-s", "1500",
                            "--scratch", str(tmp_path / "scratch")])
    status = {k: v["status"] for k, v in record["parts"].items()}
    assert set(status.values()) == {"ok"}, record["parts"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and files == [
        "evidence.json", "evidence.log", "fiber_speed.json", "gpu_smoke.json",
        "pretrain_throughput.json", "probe_overhead.json", "retrieval_speed.json",
        "units/patch-seed0.json"]
    schema = _schema()
    for name in ("evidence.json", "pretrain_throughput.json", "retrieval_speed.json",
                 "probe_overhead.json", "units/patch-seed0.json", "fiber_speed.json"):
        assert schema_errors(json.loads((out / name).read_text()), schema) == [], name
    for path in out.glob("**/*.json"):  # committable: no path of this machine
        assert str(tmp_path) not in path.read_text(), path
    throughput = json.loads((out / "pretrain_throughput.json").read_text())["results"]
    assert throughput["comparison"]["best_stock"] == "stock-fp32"
    assert {r["variant"] for r in throughput["variants"]} == {
        "stock-fp32", "vlparse-fp32", "vlparse-fp32-static"}
    fiber = json.loads((out / "fiber_speed.json").read_text())["results"]
    assert fiber["fiber_pretrain"]["model"] == "fiber_tiny" and fiber["retrieval"]["pairs"] > 0
    retrieval = json.loads((out / "retrieval_speed.json").read_text())["results"]
    assert retrieval["stock_pairs_per_s"] > 0 and retrieval["ratio_vs_stock"] > 0
    unit = json.loads((out / "units" / "patch-seed0.json").read_text())["results"]["unit"]
    assert 0.0 <= unit["f1L"] <= 1.0 and unit["pretrain"]["steps"] == 2
    assert json.loads((out / "gpu_smoke.json").read_text())["runs"]["run1"]["steps"] == 3
    sync = record["parts"]["checks"]["result"]["sync"]
    assert sync["static_shapes"] == "no synchronisation"
    assert sync["boolean_gathers"] != "no synchronisation"
    assert record["parts"]["fp8"]["result"]["verdict"].startswith("not run")


def test_the_gpu_ablation_command_needs_no_network(tmp_path):
    """The GPU machine has no network: every row of the ablation command it runs starts from
    random weights (no timm or Hugging Face download)."""
    from vlparse.cli import build_parser
    from vlparse.tasks.ablation import _resolve_configs, _split_overrides, get_rows

    evidence = _load()
    run = evidence.Run(tmp_path, False, time.monotonic() + 60, tmp_path / "log", tmp_path / "s")
    ablate = evidence._ablation_commands(run)[-1]
    args = build_parser().parse_args(ablate[ablate.index("ablate"):])
    assert args.base_config == "ablation_world_gpu" and not args.tiny
    pre, ft = _split_overrides(args.overrides)
    cfgs, _ = _resolve_configs(get_rows(None), {
        "task": args.task, "finetune_config": args.finetune_config,
        "base_config": args.base_config, "pretrain_steps": args.pretrain_steps,
        "tiny": args.tiny}, pre, ft)
    assert set(cfgs) == {"r50", "r101", "swin_nomfr", "swin_randmfr", "swin_mfr", "patch"}
    for name, cfg in cfgs.items():  # every row from random weights, nothing to download
        assert cfg.model.visual.pretrained is None, name
        assert cfg.model.text.pretrained is None, name
        assert cfg.train.batch_size == 256, name
