"""Run records: the keys of collect_run_info, first write and resume behaviour."""

from __future__ import annotations

import json
import subprocess

import yaml

from vlparse.train.runinfo import collect_run_info, git_info, write_run_info

KEYS = {"vlparse", "git", "python", "platform", "torch", "cuda_available", "cuda", "cudnn",
        "devices", "world_size", "timm", "transformers", "argv", "time_utc"}


def test_collect_run_info_keys(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    info = collect_run_info()
    assert KEYS <= info.keys()
    assert info["world_size"] == 3
    assert collect_run_info(world_size=2)["world_size"] == 2
    assert set(info["git"]) == {"commit", "dirty"}
    assert isinstance(info["argv"], list) and info["time_utc"].endswith("+00:00")
    json.dumps(info)  # JSON-ready


def test_git_info_outside_and_inside_a_repo(tmp_path):
    assert git_info(tmp_path) == {"commit": None, "dirty": None}
    assert git_info(tmp_path / "missing") == {"commit": None, "dirty": None}
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "init"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
    info = git_info(repo / "pkg")
    assert len(info["commit"]) == 40 and info["dirty"] is False
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert git_info(repo / "pkg")["dirty"] is True


def test_write_run_info_first_and_resumes(tmp_path):
    cfg = {"train": {"batch_size": 8, "epochs": 1.5}, "optim": {"betas": [0.9, 0.999]}}
    first = write_run_info(tmp_path, cfg, info={"vlparse": "x", "n": 0})
    assert first == tmp_path / "run_info.json"
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == cfg
    original = first.read_text()

    r1 = write_run_info(tmp_path, cfg, info={"vlparse": "x", "n": 1})
    assert r1.name == "run_info.resume-1.json"
    assert first.read_text() == original
    assert json.loads(r1.read_text())["config_changed"] is False
    assert not (tmp_path / "config.resume-1.yaml").exists()

    changed = {**cfg, "train": {"batch_size": 16, "epochs": 1.5}}
    r2 = write_run_info(tmp_path, changed)
    assert r2.name == "run_info.resume-2.json"
    data = json.loads(r2.read_text())
    assert data["resume"] == 2 and data["config_changed"] is True and "torch" in data
    assert yaml.safe_load((tmp_path / "config.resume-2.yaml").read_text()) == changed
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == cfg
