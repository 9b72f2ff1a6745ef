"""A trained model leaves its run: the ``model/`` folder a run exports, moved elsewhere with the
run (and the quickstart's pruned tokenizer) deleted, loads in a fresh process with
``from_pretrained`` and with ``vlparse.load`` and gives exactly the outputs of the run's own
checkpoint (read through ``config.yaml``, another path). The runs are the quickstart's, shrunk:
its pre-training config with the tokenizer pruned to the scene world, and its VQA fine-tuning.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SRC = str(Path(__file__).resolve().parents[1] / "src")
TEXTS = ["a red circle left of a blue square", "two small triangles"]

# what the fresh process computes from the moved folders alone
SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
import vlparse
from vlparse.models.processor import VisualParsingProcessor
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.vp_tasks import VisualParsingForQuestionAnswering

pre, vqa, image, question = sys.argv[1:5]
texts = json.loads(sys.argv[5])
model = VisualParsingModel.from_pretrained(pre)
batch = VisualParsingProcessor.from_pretrained(pre)(images=[image] * len(texts), text=texts)
with torch.no_grad():
    hidden = model(batch["image"], batch["input_ids"], batch["attention_mask"]).last_hidden_state
qa = VisualParsingForQuestionAnswering.from_pretrained(vqa)
batch = VisualParsingProcessor.from_pretrained(vqa)(images=[image], text=[question])
with torch.no_grad():
    logits = qa(batch["image"], batch["input_ids"], batch["attention_mask"]).logits
print(json.dumps({
    "hidden": hidden.tolist(), "logits": logits.tolist(),
    "score": vlparse.load(pre, device="cpu").score(image, texts).tolist(),
    "answer": vlparse.load(vqa, device="cpu").answer(image, question, topk=3),
    "labels": qa.labels,
}))
"""


def _outputs(pre_ckpt: Path, vqa_ckpt: Path, image: str, question: str) -> dict:
    """The same outputs from the runs' checkpoints (config.yaml + checkpoint weights)."""
    import vlparse
    from vlparse.tasks.loading import load_model

    pre, vqa = load_model(pre_ckpt), load_model(vqa_ckpt)
    assert pre.path == pre_ckpt and pre.task == "pretrain" and vqa.task == "vqa"
    batch = pre.processor(images=[image] * len(TEXTS), text=TEXTS)
    with torch.no_grad():
        hidden = pre.model(batch["image"], batch["input_ids"], batch["attention_mask"])
        q = vqa.processor(images=[image], text=[question])
        logits = vqa.model(q["image"], q["input_ids"], q["attention_mask"]).logits
    return {
        "hidden": hidden.last_hidden_state.tolist(), "logits": logits.tolist(),
        "score": vlparse.load(pre_ckpt, device="cpu").score(image, TEXTS).tolist(),
        "answer": [list(a) for a in vlparse.load(vqa_ckpt, device="cpu").answer(
            image, question, topk=3)],
        "labels": vqa.model.labels,
    }


def _newest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step_*"))[-1]


@pytest.mark.slow
def test_quickstart_models_move_and_load_in_a_fresh_process(tmp_path, scene_world,
                                                            small_overrides):
    from vlparse.data.finetune import finetune_records
    from vlparse.data.manifest import load_manifest
    from vlparse.quickstart import _config, _finetune_vqa, _pretrain

    out = tmp_path / "qs"
    overrides = [*small_overrides, "model.visual.pretrained=null", "train.max_steps=2",
                 "objectives.itm_negative_group=2",
                 "train.eval_images=4", "model.visual.image_size=64", "model.visual.window_size=4"]
    cfg = _config(out, scene_world, overrides, prune_vocab=True)
    _pretrain(cfg, scene_world, out / "pretrain", processes=1)
    vqa = _finetune_vqa(out / "pretrain", scene_world, out / "vqa", 1, progress=False)
    assert vqa is not None and vqa["steps"] == 1
    q = finetune_records(load_manifest(scene_world), "vqa", "val")[0]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = _outputs(_newest_checkpoint(out / "pretrain"), _newest_checkpoint(out / "vqa"),
                            q.image_path, q.question)
    finally:
        torch.set_num_threads(threads)
    assert expected["labels"] == json.loads((out / "vqa" / "task_state.json").read_text())[
        "answers"]

    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(out / "pretrain" / "model", moved / "pre")
    shutil.move(out / "vqa" / "model", moved / "vqa")
    image = shutil.copy(q.image_path, moved / "image.png")
    shutil.rmtree(out)  # the runs, their checkpoints and the pruned tokenizer
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(moved / "pre"), str(moved / "vqa"), str(image),
         q.question, json.dumps(TEXTS)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == expected
