"""VQA task: loss reduction, top-k, the answer vocabulary, fine-tune + evaluate end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vlparse.cli import main
from vlparse.data.finetune import finetune_records
from vlparse.data.manifest import load_manifest
from vlparse.eval.vqa import build_answer_vocab, vqa_accuracy
from vlparse.objectives.tasks import soft_target_bce as vqa_loss
from vlparse.tasks.vqa import answer_vocab_state, top_answers

FAST = ["model.visual.image_size=64", "model.visual.window_size=4", "train.max_steps=2",
        "task.eval_max_images=8"]


def model_overrides(small_overrides: list[str]) -> list[str]:
    return [o for o in small_overrides if not o.startswith("objectives.")] + FAST


def test_vqa_loss_is_mean_bce_times_answers():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g)
    keep = torch.rand(5, 7, generator=g) > 0.5
    targets = torch.rand(5, 7, generator=g).round(decimals=1) * keep
    got = vqa_loss(logits, targets, 5.0)
    mean = F.binary_cross_entropy_with_logits(logits, targets, reduction="mean")
    torch.testing.assert_close(got, mean * 7)
    # by hand: -[t log s + (1 - t) log(1 - s)] summed, over B
    s = torch.sigmoid(logits)
    manual = -(targets * s.log() + (1 - targets) * (1 - s).log()).sum() / 5
    torch.testing.assert_close(got, manual, atol=1e-5, rtol=1e-5)


def test_top_answers_sorted_sigmoid():
    logits = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    top = top_answers(logits, ["a", "b", "c", "d"], k=3)[0]
    assert [a for a, _ in top] == ["b", "d", "a"]
    assert top[0][1] == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))))
    assert len(top_answers(logits, ["a", "b", "c", "d"], k=10)[0]) == 4
    with pytest.raises(ValueError, match="k must be"):
        top_answers(logits, ["a", "b", "c", "d"], k=0)


def test_answer_vocabulary_is_deterministic(scene_world):
    records = finetune_records(load_manifest(scene_world), "vqa", "train")
    a = answer_vocab_state(records, 10)
    b = answer_vocab_state(list(reversed(records)), 10)
    assert a == b and len(a["answers"]) == 10 and 0 < a["coverage"] < 1
    assert a["answers"] == build_answer_vocab(records, 10)
    test = finetune_records(load_manifest(scene_world), "vqa", "test")
    with pytest.raises(ValueError, match="no answers"):
        answer_vocab_state(test, 10)


def test_vqa_finetune_and_evaluate_end_to_end(scene_world, small_overrides, tmp_path):
    out = tmp_path / "ft"
    argv = ["finetune", "vqa", "--data", str(scene_world), "--out", str(out),
            "--config", "vqa_world", *model_overrides(small_overrides)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "vqa" and summary["steps"] == 2
    assert 0.0 <= summary["val"]["vqa_score"] <= 1.0 and summary["val"]["num_examples"] == 8
    manifest = load_manifest(scene_world)
    state = json.loads((out / "task_state.json").read_text())
    train = finetune_records(manifest, "vqa", "train")
    assert state["answers"] == build_answer_vocab(train, 3129)
    # the exported model carries its answers and its processor
    exported = json.loads((out / "model" / "config.json").read_text())
    assert exported["task"] == "vqa" and list(exported["id2label"].values()) == state["answers"]
    assert (out / "model" / "processor_config.json").is_file()

    base = ["evaluate", "vqa", "--checkpoint", str(out), "--data", str(scene_world),
            "--no-progress", "--workers", "0"]
    val_json = tmp_path / "val.json"
    assert main([*base, "--split", "val", "--out", str(val_json)]) == 0
    val = json.loads(val_json.read_text())
    assert {"vqa_score", "per_answer_type", "num_examples", "split"} <= set(val)
    # the training run's task.eval_max_images does not cut a stand-alone evaluation
    assert val["split"] == "val"
    assert val["num_examples"] == len(finetune_records(manifest, "vqa", "val"))
    assert set(val["per_answer_type"]) <= {"yes/no", "number", "other"}
    # the score is the official accuracy of the answers in the results file
    rows = json.loads((tmp_path / "val_vqa_results.json").read_text())
    preds = {r["question_id"]: r["answer"] for r in rows}
    assert all(a in state["answers"] for a in preds.values())
    val_records = finetune_records(manifest, "vqa", "val")
    assert val["vqa_score"] == pytest.approx(vqa_accuracy(preds, val_records)["overall"])
    # the run folder evaluates its exported model; its last checkpoint scores the same
    step = sorted((out / "checkpoints").glob("step_*"))[-1]
    ckpt_json = tmp_path / "val_ckpt.json"
    assert main([*base[:3], str(step), *base[4:], "--split", "val", "--out", str(ckpt_json)]) == 0
    assert json.loads(ckpt_json.read_text())["vqa_score"] == val["vqa_score"]

    # the test split has no answers: a score of null and the submission file, every question
    test_json = tmp_path / "test.json"
    assert main([*base, "--split", "test", "--out", str(test_json)]) == 0
    test = json.loads(test_json.read_text())
    questions = finetune_records(manifest, "vqa", "test")
    assert test["vqa_score"] is None and test["num_examples"] == len(questions)
    rows = json.loads((tmp_path / "test_vqa_results.json").read_text())
    assert sorted(r["question_id"] for r in rows) == sorted(q.question_id for q in questions)
    assert all(isinstance(r["answer"], str) and r["answer"] for r in rows)
    assert test["results_file"] == str(tmp_path / "test_vqa_results.json")


def test_finetuning_reports_unknown_tokens(scene_world, small_overrides, tmp_path):
    """A VQA run whose tokenizer was pruned to other texts (the captions only) reports its
    share of [UNK] word pieces at start and warns above 1 %; with the full tokenizer it reports
    none and does not warn."""
    import warnings

    from vlparse.config import FinetuneConfig, load_config
    from vlparse.processing.tokenization import build_tokenizer, prune_tokenizer
    from vlparse.tasks.base import get_task
    from vlparse.tasks.finetune import FinetuneTask

    manifest = load_manifest(scene_world)
    questions = [r.question for r in finetune_records(manifest, "vqa", "train")]
    vocab = prune_tokenizer(build_tokenizer("bert-base-uncased"), ["a red circle"],
                            tmp_path / "tok")
    lines: list[str] = []
    cfg = load_config("vqa_world", [*model_overrides(small_overrides),
                                    f"model.text.tokenizer={vocab}"], cls=FinetuneConfig)
    task = FinetuneTask(get_task("vqa"), cfg, manifest, log=lines.append)
    with pytest.warns(UserWarning, match="unknown tokens: .* above 1%"):
        task.train_dataset()
    assert len(lines) == 1 and f"{len(questions)} texts of the vqa training texts" in lines[0]

    lines.clear()
    cfg = load_config("vqa_world", model_overrides(small_overrides), cls=FinetuneConfig)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FinetuneTask(get_task("vqa"), cfg, manifest, log=lines.append).train_dataset()
    assert lines and lines[0].startswith("unknown tokens: 0.00%")
