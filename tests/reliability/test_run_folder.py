"""A run folder belongs to one run: a new run into it is refused unless it resumes or replaces
it (the old run is moved aside, not deleted), a resumed run says what changed in its config, and
every file is written with the umask's permissions.

Guards against the old behaviour: a new run into an existing folder overwrote same-numbered
checkpoints, pruned the old run's others, replaced ``summary.json``, mixed both runs in
``log.jsonl`` and kept the old ``config.yaml`` (so ``vlparse.load`` built the old architecture
for the new weights); a resume said nothing about a changed config; ``config.yaml``,
``run_info.json``, ``latest`` and the safetensors files were written ``0600`` (logs ``0644``), so
colleagues could read a run's logs but not load its model.
"""

from __future__ import annotations

import os
import stat

import yaml

import vlparse
from vlparse.cli import main


def _snapshot(run) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_reused_folder_is_refused_or_moved_aside(tmp_path, pretrain_args, capsys,
                                                   one_line_error):
    run = tmp_path / "run"
    assert main(pretrain_args(run, "train.max_steps=1")) == 0
    first = _snapshot(run)
    other = ["train.max_steps=2", "model.text.num_layers=1"]
    capsys.readouterr()
    assert main(pretrain_args(run, *other)) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert _snapshot(run) == first

    assert main(pretrain_args(run, *other, "--overwrite")) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and _snapshot(moved[0]) == first
    assert f"moved the previous contents of {run} to {moved[0]}" in capsys.readouterr().out
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["text"]["num_layers"] == 1 and config["train"]["max_steps"] == 2
    model = vlparse.load(run, device="cpu")  # the new weights under the new config
    assert len(model.model.encoder.layers) == 1


def test_resume_with_a_changed_config_says_what_changed(tmp_path, pretrain_args, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(run, "train.max_steps=1", "train.ckpt_every=1")) == 0
    capsys.readouterr()
    assert main(pretrain_args(run, "train.max_steps=2", "train.ckpt_every=1", "--resume")) == 0
    err = capsys.readouterr().err
    assert "--resume with a changed config: train.max_steps: 1 -> 2" in err


def test_files_are_written_with_the_umask(tmp_path, pretrain_args):
    run = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert main(pretrain_args(run, "train.max_steps=1")) == 0
    finally:
        os.umask(old)
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "run_info.json", "model.safetensors", "latest", "log.jsonl"} <= names
    wrong = {str(p.relative_to(run)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != 0o644}
    assert not wrong
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o755 for p in run.rglob("*") if p.is_dir())
