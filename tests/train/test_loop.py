"""End-to-end tests of the training loop through the pre-training task."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlparse.config import load_config
from vlparse.tasks.pretrain import run_pretrain

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(run_dir / "checkpoints" / latest / "model.safetensors")


def _pretrain(world: Path, out: Path, small: list[str], *extra: str, resume: bool = False) -> dict:
    """``run_pretrain`` of the ``tiny`` config with ``small`` and ``extra`` overrides, no eval."""
    cfg = load_config("tiny", [*small, *extra])
    return run_pretrain(cfg, world, out, resume=resume, evaluate=False)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``python -m vlparse.cli ARGS`` in a fresh process; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "vlparse.cli", *args], env=env, capture_output=True, text=True
    )


# the MLM schedule makes the loss depend on the step, which the resumed run must restore
@pytest.mark.parametrize("extra", [(), ("objectives.mlm_delay=1", "objectives.mlm_ramp=2")])
def test_resume_is_bitwise_identical(scene_world, tmp_path, small_overrides, extra):
    straight, split = tmp_path / "straight", tmp_path / "split"
    small = [*small_overrides, *extra]
    _pretrain(scene_world, straight, small, "train.max_steps=4", "train.ckpt_every=2")
    _pretrain(scene_world, split, small, "train.max_steps=2", "train.ckpt_every=2")
    first_half = _weights(split)
    _pretrain(scene_world, split, small, "train.max_steps=4", "train.ckpt_every=2", resume=True)
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the run did move: the resumed half changed the weights
    assert any(not torch.equal(first_half[k], b[k]) for k in a)
    # the log kept the lines written before the stop
    steps = [json.loads(line)["step"] for line in (split / "log.jsonl").read_text().splitlines()]
    assert steps[:2] == [1, 2] and 4 in steps


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def test_mlm_delay_keeps_the_mlm_and_mfr_heads_still(scene_world, tmp_path, small_overrides):
    """While MLM is weighted 0 the masked pass is not run: the MLM and MFR heads get no gradient,
    so their biases (no weight decay) stay at their initial zeros, while without the delay they
    move; the log has no MLM or MFR values for those steps."""
    keys = ["mlm_head.dense.bias", "mfr_head.fc.bias"]
    _pretrain(scene_world, tmp_path / "a", small_overrides, "train.max_steps=2",
              "objectives.mlm_delay=2")
    assert all(torch.count_nonzero(_weights(tmp_path / "a")[k]) == 0 for k in keys)
    logged = [d for d in _log(tmp_path / "a") if "mlm_weight" in d]
    assert [d["mlm_weight"] for d in logged] == [0.0, 0.0]
    assert all({"mlm", "mfr", "mlm_acc"}.isdisjoint(d) for d in logged)
    _pretrain(scene_world, tmp_path / "b", small_overrides, "train.max_steps=2")
    assert all(torch.count_nonzero(_weights(tmp_path / "b")[k]) > 0 for k in keys)


def test_log_averages_each_value_over_the_steps_that_report_it(
    scene_world, tmp_path, small_overrides
):
    """MLM starts at step 2: a log line over steps 1-2 holds step 2's MLM loss, not half of it."""
    extra = ["train.max_steps=2", "objectives.mlm_delay=1"]
    _pretrain(scene_world, tmp_path / "each", small_overrides, *extra, "train.log_every=1")
    _pretrain(scene_world, tmp_path / "pair", small_overrides, *extra, "train.log_every=2")
    each = [d for d in _log(tmp_path / "each") if "loss" in d]
    pair = [d for d in _log(tmp_path / "pair") if "loss" in d]
    assert "mlm" not in each[0] and len(pair) == 1
    assert pair[0]["mlm"] == pytest.approx(each[1]["mlm"], rel=1e-6)
    assert pair[0]["loss"] == pytest.approx((each[0]["loss"] + each[1]["loss"]) / 2, rel=1e-6)


# unmatched captions lent within groups of the batch: each process's share holds whole groups
@pytest.mark.slow
@pytest.mark.parametrize(
    "extra", [(), ("objectives.itm_negatives=batch", "objectives.itm_negative_group=2")]
)
def test_two_process_ddp_equals_one_process(scene_world, tmp_path, small_overrides, extra):
    args = [
        "pretrain",
        "--config",
        "tiny",
        "--data",
        str(scene_world),
        "--no-eval",
        *small_overrides,
        "train.max_steps=1",
        "train.ckpt_every=1",
        "train.seed=5",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one"
    _cli(env, *args, "--out", str(one)).check_returncode()
    two = tmp_path / "two"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "vlparse.cli",
            *args,
            "--out",
            str(two),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(one), _weights(two)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-6, rtol=1e-5), k


def _break_images(world: Path, n_missing: int, n_corrupt: int) -> list[str]:
    manifest = json.loads(world.read_text())
    data = json.loads((world.parent / manifest["coco"]["train"]["karpathy"]).read_text())
    root = world.parent / manifest["coco"]["train"]["image_root"]
    train = [im for im in data["images"] if im["split"] == "train"]
    broken = []
    for i, im in enumerate(train[: n_missing + n_corrupt]):
        path = root / im.get("filepath", "") / im["filename"]
        path.unlink()
        if i >= n_missing:
            path.write_bytes(b"not a jpeg at all")
        broken.append(im["filename"])
    return broken


def _copy_world(world: Path, dst: Path) -> Path:
    shutil.copytree(world.parent, dst)
    return dst / world.name


def test_bad_images_are_skipped_named_and_judged_on_enough_images(
    scene_world, tmp_path, small_overrides
):
    world = _copy_world(scene_world, tmp_path / "w")
    broken = _break_images(world, 1, 1)
    # one train set, plenty of tolerance: the run finishes and names both images
    ok = tmp_path / "ok"
    summary = _pretrain(world, ok, small_overrides, "train.max_steps=12",
                        "data.max_bad_fraction=0.5", "data.train_sets=[coco]")
    log = (ok / "train.log").read_text()
    assert summary["bad_images"] >= 1
    assert any(name in log for name in broken)
    # default 1 % threshold, but far fewer images than a verdict needs (the trainer's tests
    # stop a run above it): the resumed run finishes, says so, and keeps what was written
    strict = tmp_path / "strict"
    _pretrain(scene_world, strict, small_overrides, "train.max_steps=1", "train.ckpt_every=1",
              "data.train_sets=[coco]")
    before = sorted(p.name for p in (strict / "checkpoints").iterdir())
    summary = _pretrain(world, strict, small_overrides, "train.max_steps=12",
                        "data.train_sets=[coco]", resume=True)
    assert summary["steps"] == 12 and summary["bad_images"] >= 1
    assert "Too few images" in (strict / "train.log").read_text()
    after = sorted(p.name for p in (strict / "checkpoints").iterdir())
    assert set(before) <= set(after)
    assert (strict / "log.jsonl").read_text().splitlines()[0].startswith("{")


def test_on_error_raise_is_fatal(scene_world, tmp_path, small_overrides):
    world = _copy_world(scene_world, tmp_path / "w")
    _break_images(world, 0, 3)
    from vlparse.errors import BadImageError

    with pytest.raises(BadImageError):
        _pretrain(world, tmp_path / "run", small_overrides, "train.max_steps=12",
                  "data.on_error=raise", "data.train_sets=[coco]")


def test_cli_reports_malformed_json_and_unknown_keys(scene_world, tmp_path, small_overrides):
    world = _copy_world(scene_world, tmp_path / "w")
    manifest = json.loads(world.read_text())
    karpathy = world.parent / manifest["coco"]["train"]["karpathy"]
    karpathy.write_text(karpathy.read_text()[:200])
    env = {**os.environ, "PYTHONPATH": SRC}
    pretrain = ["pretrain", "--config", "tiny"]
    proc = _cli(env, *pretrain, "--data", str(world), "--out", str(tmp_path / "r"),
                *small_overrides)
    assert proc.returncode == 2
    assert "dataset_coco.json" in proc.stderr and "line" in proc.stderr
    proc = _cli(env, *pretrain, "--data", str(scene_world), "--out", str(tmp_path / "r2"),
                "train.batchsize=3")
    assert proc.returncode == 2
    assert "train.batchsize" in proc.stderr and "batch_size" in proc.stderr
    proc = _cli(env, *pretrain, "--data", str(tmp_path / "missing.json"), "--out",
                str(tmp_path / "r3"))
    assert proc.returncode == 2 and "manifest not found" in proc.stderr
    assert "Traceback" not in proc.stderr
