"""Pre-training from tar shards (``data.format=shards``): the same images as from the manifest,
bad samples skipped, counted and named by the trainer, a stream resumed mid-epoch bit for bit,
and the errors a user can make."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlparse.config import load_config
from vlparse.data.shards import load_index, write_shards
from vlparse.errors import BadDataError, ConfigError
from vlparse.tasks.pretrain import PretrainTask, run_pretrain
from vlparse.train.trainer import train

SRC = str(Path(__file__).resolve().parents[2] / "src")
MAXCOUNT = 16
EPOCH = ["train.batch_size=5", "train.epochs=1"]  # the world's 105 images: 21 whole steps


@pytest.fixture(scope="module")
def shards(scene_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "coco_vg"
    write_shards(scene_world, out, maxcount=MAXCOUNT, progress=False)
    return out


def _cfg(small: list[str], *extra: str, shards: Path | None = None):
    data = ["data.format=shards", f"data.shards={shards}", "data.shuffle_buffer=20"]
    return load_config("tiny", [*small, *(data if shards else []), *extra])


class _Seen(PretrainTask):
    """Pre-training that notes a digest of every image tensor its steps see."""

    def step(self, model, batch, ctx):
        for image in batch["image"]:
            self.seen.append(hashlib.sha1(image.numpy().tobytes()).hexdigest())
        return super().step(model, batch, ctx)


def _images_of_an_epoch(world: Path, out: Path, cfg) -> Counter:
    task = _Seen(cfg, world, evaluate=False, log=None)
    task.seen = []
    result = train(task, cfg, out, evaluate=False)
    assert result.epoch == 1 and result.step == 21
    return Counter(task.seen)


@pytest.mark.slow
def test_an_epoch_of_shards_sees_the_manifest_images(scene_world, shards, tmp_path,
                                                     small_overrides):
    """Both paths decode the same files into the same tensors: an epoch of each holds the same
    multiset of images (each of the 105 once), in other orders."""
    manifest = _images_of_an_epoch(scene_world, tmp_path / "m", _cfg(small_overrides, *EPOCH))
    streamed = _images_of_an_epoch(scene_world, tmp_path / "s",
                                   _cfg(small_overrides, *EPOCH, shards=shards))
    assert sum(manifest.values()) == load_index(shards)["total"] == 105
    assert streamed == manifest
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["train_images"] == summary["train_examples"] == 105


def _rewrite_member(path: Path, member: str, data: bytes) -> None:
    with tarfile.open(path) as t:
        files = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(path, "w") as t:
        for m, content in files:
            content = data if m.name == member else content
            m.size = len(content)
            t.addfile(m, io.BytesIO(content))


def _damaged(shards: Path, root: Path) -> Path:
    """A copy with a corrupt image (record 20) and a tar member cut short (record 37, the 6th
    sample of shard 2: it and the 10 after it are lost)."""
    copy = Path(shutil.copytree(shards, root / "damaged"))
    _rewrite_member(copy / "shard-000001.tar", "000000020.jpg", b"not a jpeg")
    path = copy / "shard-000002.tar"
    with tarfile.open(path) as t:
        cut = t.getmember("000000037.jpg")
    os.truncate(path, cut.offset_data + cut.size // 2)
    return copy


@pytest.mark.slow
def test_bad_samples_are_skipped_counted_and_named(scene_world, shards, tmp_path,
                                                   small_overrides):
    copy = _damaged(shards, tmp_path)
    cfg = _cfg(small_overrides, *EPOCH, "data.max_bad_fraction=0.5", shards=copy)
    summary = run_pretrain(cfg, scene_world, tmp_path / "run", evaluate=False)
    assert summary["bad_images"] == 1 + (MAXCOUNT - 5)  # every position of the epoch is read
    log = (tmp_path / "run" / "train.log").read_text()
    assert "bad image skipped: shard-000001.tar/000000020 (not a recognised image" in log
    for i in range(5, MAXCOUNT):
        assert f"bad image skipped: shard-000002.tar#{i} (shard unreadable" in log
    strict = _cfg(small_overrides, *EPOCH, "data.on_error=raise", shards=copy)
    with pytest.raises(BadDataError, match=r"first: shard-00000[12]\.tar"):
        run_pretrain(strict, scene_world, tmp_path / "strict", evaluate=False)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(run_dir / "checkpoints" / latest / "model.safetensors")


def test_resume_mid_epoch_is_bitwise_identical(scene_world, shards, tmp_path, small_overrides):
    """An exact resume replays the stream and skips what was consumed: the same items (and
    reservoirs) as without the stop. The stop is mid-epoch (step 3 of 26), so a stream that
    restarted its epoch would train on other images."""
    run = lambda out, steps, resume=False, *extra: run_pretrain(
        _cfg(small_overrides, f"train.max_steps={steps}", "train.ckpt_every=3", *extra,
             shards=shards), scene_world, out, resume=resume, evaluate=False)
    run(tmp_path / "straight", 6)
    run(tmp_path / "split", 3)
    half = _weights(tmp_path / "split")
    run(tmp_path / "split", 6, True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(half[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="same layout"):
        run(tmp_path / "split", 9, True, "data.num_workers=1")


def test_shards_of_other_sets_are_refused(scene_world, shards, small_overrides):
    cfg = _cfg(small_overrides, "data.train_sets=[coco]", shards=shards)
    with pytest.raises(ConfigError, match=r"data.train_sets=\['coco'\].*sets \['coco', 'vg'\]"):
        PretrainTask(cfg, scene_world, log=None)


def test_a_missing_shard_is_a_one_line_error(scene_world, shards, tmp_path, small_overrides):
    copy = Path(shutil.copytree(shards, tmp_path / "copy"))
    (copy / "shard-000003.tar").unlink()
    argv = ["pretrain", "--config", "tiny", "--data", str(scene_world), "--out",
            str(tmp_path / "run"), "--no-eval", *small_overrides, "data.format=shards",
            f"data.shards={copy}"]
    done = subprocess.run([sys.executable, "-m", "vlparse", *argv], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": SRC})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("vlparse: error: ") and "shard-000003.tar" in lines[-1]
    assert "Traceback" not in done.stderr
