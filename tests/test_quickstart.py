"""The quickstart end to end, shrunk to seconds."""

from __future__ import annotations

import json

from vlparse.cli import main


def test_quickstart_end_to_end(tmp_path, small_overrides):
    # the shrunk parser cannot take the shipped weights (tests/models/test_embedders.py loads them)
    # batch 4 in 2 processes: groups of 2 for the batch negatives
    small_overrides = [*small_overrides, "model.visual.pretrained=null",
                       "objectives.itm_negative_group=2"]
    out = tmp_path / "qs"
    rc = main([
        "quickstart", "--out", str(out), "--images", "60", "--workers", "1", "--vqa-steps", "2",
        "--processes", "2", *small_overrides, "train.max_steps=3", "train.eval_images=12",
    ])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    held = summary["held_out"]
    for key in ("itm_acc", "itm_chance", "mlm_acc", "mlm_chance", "mlm_acc_wrong_image",
                "i2t_r1", "i2t_r1_chance"):
        assert key in held
    assert held["itm_chance"] == 0.5
    assert 0.0 < held["imf_1L"] < 1.0 and 0.0 <= held["nmi_last"] <= 1.0
    assert held["probe_pairs"] == held["num_images"]
    assert 0.0 <= held["itm_acc"] <= 1.0 and held["itm_pairs"] == 4 * held["num_images"]
    assert (out / "loss_curves.png").stat().st_size > 1000
    for name in ("imf.json", "nmi.json", "imf_from_input.png", "imf_within_layer.png", "nmi.png"):
        assert (out / "probe" / name).exists(), name
    assert summary["pretrain"]["steps"] == 3 and summary["pretrain"]["world_size"] == 2
    # pre-trained with the tokenizer pruned to the world's texts
    pruned = (out / "tokenizer" / "vocab.txt").read_text().split()
    assert 50 < len(pruned) < 500 and "triangle" in pruned
    assert str(out / "tokenizer") in (out / "pretrain" / "config.yaml").read_text()
    vqa = summary["vqa"]
    assert vqa["steps"] == 2 and vqa["num_examples"] > 0
    assert 0.0 <= vqa["vqa_score"] <= 1.0 and 0.0 < vqa["majority_baseline"] <= 1.0
    # a second run reuses the scene world; --vqa-steps 0 skips VQA
    assert main(["quickstart", "--out", str(out), "--images", "60", "--vqa-steps", "0",
                 "--processes", "1", "--full-vocab", *small_overrides, "train.max_steps=1",
                 "train.eval_images=4"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["vqa"] is None and again["pretrain"]["world_size"] == 1
    assert "tokenizer: bert-base-uncased" in (out / "pretrain" / "config.yaml").read_text()


def test_cli_help_has_examples(capsys):
    import pytest

    for cmd in (["pretrain", "--help"], ["quickstart", "--help"], ["data", "synth", "--help"]):
        with pytest.raises(SystemExit):
            main(cmd)
        assert "examples:" in capsys.readouterr().out


def test_python_dash_m_vlparse():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "vlparse", "quickstart", "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "examples:" in done.stdout


def test_fiber_quickstart_end_to_end(tmp_path):
    # the fiber_quickstart model itself (its shipped parser weights, 128 wide), tiny budgets
    out = tmp_path / "qs"
    rc = main([
        "quickstart", "--model", "fiber", "--out", str(out), "--images", "60", "--workers", "1",
        "--vqa-steps", "2", "--processes", "2", "train.max_steps=2", "train.batch_size=8",
        "train.eval_images=12",
    ])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "fiber_quickstart"
    held = summary["held_out"]
    assert held["itm_chance"] == 0.5 and held["itm_pairs"] == 2 * held["num_images"] > 0
    assert held["i2t_r1_chance"] == 1 / held["retrieval_images"]
    for key in ("itm_acc", "i2t_r1", "t2i_r1", "itm_hard_acc", "mlm_acc"):
        assert 0.0 <= held[key] <= 1.0, key
    assert summary["pretrain"]["steps"] == 2 and summary["pretrain"]["world_size"] == 2
    # the text backbone's vocabulary is the pruned tokenizer's
    config = (out / "pretrain" / "config.yaml").read_text()
    pruned = (out / "tokenizer" / "vocab.txt").read_text().split()
    assert str(out / "tokenizer") in config and f"vocab_size: {len(pruned)}" in config
    vqa = summary["vqa"]
    assert vqa["steps"] == 2 and vqa["num_examples"] > 0
    assert 0.0 <= vqa["vqa_score"] <= 1.0 and 0.0 < vqa["majority_baseline"] <= 1.0
    ft = json.loads((out / "vqa" / "model" / "config.json").read_text())
    assert (ft["family"], ft["architecture"]) == ("fiber", "FiberForQuestionAnswering")
