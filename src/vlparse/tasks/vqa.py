"""VQA v2 (paper section 4.2, Table 1): answer classification.

**Answers.** ``prepare`` builds the vocabulary from the training annotations
(``data.train_sets`` x ``data.train_splits``): the ``task.num_answers`` most frequent normalised
consensus answers (``multiple_choice_answer``), most frequent first, ties alphabetical
(:func:`~vlparse.eval.vqa.build_answer_vocab`), so the same data always give the same
vocabulary. It is stored in the run's ``task_state.json`` (key ``answers``) and in the
fine-tuned model (its labels, ``id2label`` of the exported ``config.json``), and sizes the head.

**Model and loss.** The family's question-answering task model (Visual Parsing:
:class:`~vlparse.models.vp_tasks.VisualParsingForQuestionAnswering`, an MLP on the ``[CLS]``
state). Binary cross-entropy with logits against the soft scores ``min(1, count / 3)``
(:func:`~vlparse.processing.answers.soft_scores`), summed over the ``A`` answers and averaged
over the questions: the mean over all ``B x A`` entries times ``A``
(:func:`~vlparse.objectives.tasks.soft_target_bce`). Answers outside the vocabulary give an
all-zero target.

**Metric.** The argmax answer of each question scored by the official VQA accuracy
(normalisation, mean over the 10 leave-one-out subsets of ``min(1, matches / 3)``), overall
(``vqa_score``) and per answer type (``per_answer_type``), fractions in ``[0, 1]``; the
majority baseline (always the most frequent training answer) beside it. A split without answers
(``test``, as in the official release) gets ``vqa_score: null``: only the predictions are made.
``vlparse evaluate vqa --out X.json`` also writes the test-server file
``X_vqa_results.json`` (``[{"question_id", "answer"}]``, one entry per question) beside the
JSON, for every split.

**Top-k.** :func:`top_answers` gives the ``k`` best answers with their sigmoid scores: each
answer is scored on its own, as trained, so the scores are independent (not a distribution
over the answers) and need not sum to 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vlparse.config import FinetuneConfig
from vlparse.data.finetune import VQADataset, collate_finetune
from vlparse.errors import ConfigError, DataFormatError, RunFolderError
from vlparse.eval.vqa import build_answer_vocab, vqa_accuracy, write_vqa_results
from vlparse.tasks.base import Task
from vlparse.tasks.classification import eval_loader, manifest_records, to_device
from vlparse.train.protocol import StepOutput
from vlparse.utils import autocast as precision_autocast

__all__ = [
    "VQATask",
    "build_task",
    "answer_vocab_state",
    "vqa_step",
    "top_answers",
    "evaluate_vqa",
    "results_path",
]


def vqa_step(model: nn.Module, batch: dict[str, Any], reduce_count) -> StepOutput:
    """The task model's loss on a batch (soft-score ``targets (B, A)``, normalised by the mean
    number of questions per process); counts ``hit_correct`` / ``hit_total``: the argmax answer
    has a non-zero soft score (a training-time proxy of the VQA accuracy)."""
    targets = batch["targets"]
    b = targets.shape[0]
    normalizer = reduce_count(torch.tensor(float(b), device=targets.device))
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"], labels=targets,
                loss_normalizer=normalizer)
    top = out.logits.detach().argmax(-1)
    hits = int((targets.gather(1, top[:, None]) > 0).sum())
    return StepOutput(out.loss, {"loss": float(out.loss.detach())},
                      {"hit_correct": hits, "hit_total": b})


def top_answers(logits: Tensor, answers: list[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` best answers of each row of ``logits (B, A)`` with their sigmoid scores, best
    first: each answer's own probability under the binary cross-entropy it was trained with,
    independent of the others (they need not sum to 1)."""
    if k < 1:
        raise ValueError(f"top_answers: k must be >= 1, got {k}")
    probs = torch.sigmoid(logits.float())
    values, index = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [[(answers[int(i)], float(v)) for v, i in zip(vr, ir, strict=True)]
            for vr, ir in zip(values, index, strict=True)]


def answer_vocab_state(records: list, size: int) -> dict[str, Any]:
    """The task state of a VQA run: ``answers`` (the vocabulary), ``answer_source``,
    ``train_questions`` and ``coverage`` (fraction of the training questions whose consensus
    answer is in the vocabulary)."""
    answered = [r for r in records if r.has_answers]
    if not answered:
        raise ConfigError(
            "VQA: the training splits have no answers (is data.train_splits a test split?); "
            "the answer vocabulary is built from the training annotations"
        )
    vocab = build_answer_vocab(answered, size)
    if not vocab:
        raise DataFormatError(
            "VQA: no answer in the training annotations; check the annotations file")
    from vlparse.eval.vqa import normalize_answer

    known = set(vocab)
    covered = sum(normalize_answer(r.multiple_choice_answer or "") in known for r in answered)
    return {"answers": vocab, "answer_source": "multiple_choice_answer",
            "train_questions": len(answered), "coverage": covered / len(answered)}


def results_path(out_json: Path) -> Path:
    """Where the test-server file of ``out_json`` goes: ``<stem>_vqa_results.json`` beside it."""
    return out_json.with_name(f"{out_json.stem}_vqa_results.json")


@torch.no_grad()
def evaluate_vqa(
    model: nn.Module, dataset: VQADataset, cfg: FinetuneConfig, device: torch.device,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every question of ``dataset`` and score the answered ones.

    Returns:
        ``vqa_score`` and ``per_answer_type`` (``None`` / ``{}`` without answers),
        ``num_examples`` (questions predicted), ``num_answered``, ``majority_baseline`` (score of
        always answering the vocabulary's first, most frequent, answer), and ``predictions``
        ``{question_id: answer}`` (removed by ``write_outputs``).
    """
    autocast = precision_autocast(cfg.train.precision, device)
    answers = dataset.answer_vocab
    predictions: dict[int, str] = {}
    for batch in eval_loader(dataset, cfg, device, progress, "evaluate vqa"):
        batch = to_device(batch, device)
        with autocast:
            logits = model(batch["image"], batch["input_ids"], batch["attention_mask"]).logits
        for qid, i in zip(batch["question_id"].tolist(), logits.float().argmax(-1).tolist(),
                          strict=True):
            predictions[int(qid)] = answers[i]
    answered = [r for r in dataset.records if r.has_answers]
    result: dict[str, Any] = {"vqa_score": None, "per_answer_type": {}}
    majority = None
    if answered:
        acc = vqa_accuracy(predictions, answered)
        result = {"vqa_score": acc["overall"], "per_answer_type": acc["per_answer_type"]}
        majority = vqa_accuracy({r.question_id: answers[0] for r in answered},
                                answered)["overall"]
    return {
        **result,
        "num_examples": len(predictions),
        "num_answered": len(answered),
        "majority_baseline": majority,
        "num_answers": len(answers),
        "predictions": predictions,
    }


class VQATask(Task):
    """VQA v2; see the module docstring."""

    name = "vqa"
    recipe = "vqa"
    default_split = "test"
    metric_keys = ("vqa_score", "per_answer_type")

    def prepare(self, manifest: dict, cfg: FinetuneConfig) -> dict[str, Any]:
        records = manifest_records(manifest, cfg.data.train_sets, cfg.data.train_splits, "vqa")
        return answer_vocab_state(records, cfg.task.num_answers)

    def labels(self, state: dict[str, Any]) -> list[str] | None:
        return list(state["answers"]) if state.get("answers") else None

    def dataset(self, manifest, sets, splits, cfg, processor, labels, train) -> Dataset:
        if not labels:
            raise RunFolderError(
                "VQA: the model has no answer vocabulary (task_state.json 'answers' of a run, "
                "id2label of a saved model); it is written by 'vlparse finetune vqa'"
            )
        records = manifest_records(manifest, sets, splits, "vqa")
        # a split without answers is never cut: the results file needs every question
        if not train and cfg.task.eval_max_images and any(r.has_answers for r in records):
            records = records[: cfg.task.eval_max_images]
        on_error = cfg.data.on_error if train else "raise"  # every question gets an answer
        return VQADataset(records, processor.tokenizer, labels, processor.image_size,
                          processor.max_text_len, on_error, processor.image_transform,
                          encode=processor.encode_text)

    def texts(self, dataset) -> list[str]:
        return [r.question for r in dataset.records]

    def collate(self, items):
        return collate_finetune(items)

    def step(self, model, batch, reduce_count, cfg) -> StepOutput:
        return vqa_step(model, batch, reduce_count)

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        return evaluate_vqa(model, dataset, cfg, device, progress)

    def write_outputs(self, result, out_json):
        result = dict(result)
        predictions = result.pop("predictions", None)
        if out_json is not None and predictions is not None:
            path = write_vqa_results(results_path(out_json), predictions)
            result["results_file"] = str(path)
        if result.get("vqa_score") is None:
            result["note"] = ("this split has no answers: predictions only; submit the "
                              "results file to the VQA evaluation server")
        return result


def build_task() -> VQATask:
    """The VQA task (registered in :data:`vlparse.tasks.base.TASK_MODULES`)."""
    return VQATask()
