"""A run folder is data, not code: a checkpoint that carries a pickled payload is refused, and
the payload never runs, on ``pretrain --resume``, ``finetune TASK --resume`` and a re-run of
``vlparse ablate`` (which resumes by itself).

Guards against the old behaviour: ``state.pt`` was read with ``torch.load(weights_only=False)``,
so a payload whose ``__reduce__`` runs code ran on every resume, and the run then finished
normally without a word.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from vlparse.cli import main

FAST = ["model.visual.image_size=64", "model.visual.window_size=4"]


class Payload:
    """Unpickling it creates the marker file: proof that code from the checkpoint ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_payload(step_dir: Path, marker: Path) -> None:
    """Put a pickled state with the payload into a checkpoint folder: the real state plus the
    payload where the checkpoint is a pickle already, else a pickle in place of its state files
    (as an old or downloaded run folder would hold)."""
    legacy = step_dir / "state.pt"
    if legacy.is_file():
        state = torch.load(legacy, weights_only=False)  # written by this test's own run
    else:
        state = {"format_version": 1, "step": 1}
        for name in ("state.json", "state.safetensors"):
            (step_dir / name).unlink()
    state["payload"] = Payload(str(marker))
    torch.save(state, legacy)


def test_pretrain_resume_refuses_a_pickled_state(tmp_path, pretrain_args, capsys,
                                                 one_line_error):
    run, marker = tmp_path / "run", tmp_path / "ran"
    assert main(pretrain_args(run, "train.max_steps=1", "train.ckpt_every=1")) == 0
    plant_payload(run / "checkpoints" / "step_00000001", marker)
    capsys.readouterr()
    rc = main(pretrain_args(run, "train.max_steps=2", "--resume"))
    assert not marker.exists()
    assert rc == 2
    line = one_line_error(capsys.readouterr().err)
    assert "state.pt" in line and "vlparse convert-checkpoint" in line and "--trust" in line


def test_finetune_resume_refuses_a_pickled_state(tmp_path, scene_world, small_overrides,
                                                 capsys, one_line_error):
    run, marker = tmp_path / "ft", tmp_path / "ran"
    model = [o for o in small_overrides if not o.startswith("objectives.")] + FAST
    argv = ["finetune", "retrieval", "--data", str(scene_world), "--out", str(run), "--config",
            "retrieval_world", "--no-eval", *model, "task.num_neg=1", "train.ckpt_every=1"]
    assert main([*argv, "train.max_steps=1"]) == 0
    plant_payload(run / "checkpoints" / "step_00000001", marker)
    capsys.readouterr()
    rc = main([*argv, "train.max_steps=2", "--resume"])
    assert not marker.exists()
    assert rc == 2
    assert "vlparse convert-checkpoint" in one_line_error(capsys.readouterr().err)


def test_ablate_rerun_refuses_a_pickled_state(tmp_path, scene_world, small_overrides,
                                              pretrain_args, capsys, one_line_error):
    out, marker = tmp_path / "abl", tmp_path / "ran"
    stage = out / "runs" / "swin_mfr" / "seed0" / "pretrain"
    # an interrupted pre-training stage of the row (its checkpoint, no summary yet)
    made = tmp_path / "made"
    assert main(pretrain_args(made, *FAST, "objectives.mfr_mode=attention",
                              "train.max_steps=1", "train.ckpt_every=1")) == 0
    stage.parent.mkdir(parents=True)
    shutil.copytree(made, stage)
    (stage / "summary.json").unlink()
    plant_payload(stage / "checkpoints" / "step_00000001", marker)
    capsys.readouterr()
    argv = ["ablate", "--data", str(scene_world), "--out", str(out), "--tiny", "--seeds", "1",
            "--rows", "swin_mfr", "--pretrain-steps", "2", "--finetune-steps", "1",
            "--probe-samples", "4", "--no-progress", *small_overrides, "train.eval_images=2",
            *FAST, "finetune.train.batch_size=4", "finetune.task.eval_max_images=4"]
    rc = main(argv)
    assert not marker.exists()
    assert rc == 2
    assert "vlparse convert-checkpoint" in one_line_error(capsys.readouterr().err)
