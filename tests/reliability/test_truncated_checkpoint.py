"""A truncated checkpoint is named, and ``--resume`` falls back to the newest intact one, says
so, and ends with the weights of a run that was never damaged.

Guards against the old behaviour: a truncated file stopped ``--resume`` (and ``vlparse.load``)
with a raw safetensors or zip traceback that did not name the file, and there was no fallback to
the previous intact checkpoint.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import vlparse
from vlparse.cli import main


def _latest_weights(run) -> dict[str, torch.Tensor]:
    name = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(run / "checkpoints" / name / "model.safetensors")


def test_a_truncated_checkpoint_is_named_and_skipped(tmp_path, pretrain_args, capsys):
    run, straight = tmp_path / "run", tmp_path / "straight"
    assert main(pretrain_args(run, "train.max_steps=3", "train.ckpt_every=1")) == 0
    assert main(pretrain_args(straight, "train.max_steps=4", "train.ckpt_every=1")) == 0
    damaged = run / "checkpoints" / "step_00000003" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    with pytest.raises(Exception) as caught:
        vlparse.load(damaged.parent, device="cpu")
    assert str(damaged) in str(caught.value)

    capsys.readouterr()
    assert main(pretrain_args(run, "train.max_steps=4", "train.ckpt_every=1", "--resume")) == 0
    err = capsys.readouterr().err
    assert str(damaged) in err and "resuming from step_00000002" in err
    a, b = _latest_weights(straight), _latest_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
