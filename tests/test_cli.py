"""The command line: one module per command, light to import, examples in every ``--help``, and
the error contract (one line ``vlparse: error: ...``, status 2, for errors a user can fix)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vlparse
from vlparse import cli
from vlparse.commands import COMMANDS
from vlparse.errors import ConfigError

SRC = str(Path(vlparse.__file__).resolve().parents[1])


def test_importing_the_cli_imports_no_model_library():
    code = ("import sys, vlparse.cli; "
            "print(sorted(m for m in ('timm', 'transformers', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": SRC, "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [
    ["quickstart"], ["pretrain"], ["pretrain-parser"], ["data", "synth"], ["finetune"],
    ["finetune", "vqa"], ["evaluate"], ["probe"], ["probe", "masks"], ["ablate"], ["info"],
    ["convert-checkpoint"],
])
def test_every_command_has_examples(argv, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    assert "examples:\n  vlparse " in capsys.readouterr().out


def test_each_command_is_a_module_that_wires_itself():
    import argparse

    for module in COMMANDS:
        assert callable(module.add_parser) and callable(module.run), module.__name__
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"quickstart", "pretrain", "pretrain-parser", "data", "finetune",
                                "evaluate", "probe", "ablate", "info", "figure",
                                "convert-checkpoint"}


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_user_errors_are_one_line_and_bugs_are_tracebacks(monkeypatch, capsys):
    from vlparse.commands import info

    def user_error(args):
        raise ConfigError("train.lr: -1 is not allowed\n(the learning rate must be > 0)")

    monkeypatch.setattr(info, "run", user_error)
    assert cli.main(["info"]) == 2
    assert capsys.readouterr().err == ("vlparse: error: train.lr: -1 is not allowed; (the "
                                       "learning rate must be > 0)\n")

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(info, "run", bug)
    with pytest.raises(KeyError):
        cli.main(["info"])


def test_convert_checkpoint_needs_trust(tmp_path, capsys):
    from torch import nn

    from vlparse.train.checkpoint import capture_rng_state, save_checkpoint

    model = nn.Linear(2, 2)
    folder = save_checkpoint(tmp_path, 1, model, None, None, {"epoch": 0})
    for name in ("state.json", "state.safetensors"):
        (folder / name).unlink()
    torch.save({"format_version": 1, "step": 1, "optimizer": None, "scheduler": None,
                "rng": capture_rng_state(), "extra_state": {"epoch": 0}}, folder / "state.pt")
    assert cli.main(["convert-checkpoint", str(tmp_path)]) == 2
    assert "pass --trust" in capsys.readouterr().err
    assert (folder / "state.pt").exists()
    assert cli.main(["convert-checkpoint", str(tmp_path), "--trust"]) == 0
    assert f"converted {folder}" in capsys.readouterr().out
    assert (folder / "state.json").is_file() and not (folder / "state.pt").exists()
    assert cli.main(["convert-checkpoint", str(tmp_path), "--trust"]) == 2
    assert "no old-format checkpoint" in capsys.readouterr().err
