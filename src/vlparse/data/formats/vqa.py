"""Reader of VQA v2 (questions + annotations, official files).

Files (see ``DATA_FORMATS.md``)::

    v2_OpenEnded_mscoco_<subtype>_questions.json:
        {"data_subtype": "train2014", "questions": [{"image_id", "question", "question_id"}, ...]}
    v2_mscoco_<subtype>_annotations.json (not for the test splits):
        {"annotations": [{"question_id", "image_id", "question_type", "answer_type",
                          "multiple_choice_answer", "answers": [{"answer", ...} x 10]}, ...]}

The image of a question is ``<image_root>/COCO_<subtype>_<image_id as 12 digits>.jpg``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vlparse.data.formats.jsonio import load_json, require_typed
from vlparse.errors import DataFormatError

__all__ = ["VQAQuestion", "coco_image_name", "read_vqa"]

_SUBTYPE_IN_NAME = re.compile(r"^v2_OpenEnded_mscoco_(.+)_questions\.json$")


@dataclass
class VQAQuestion:
    """One VQA v2 question, with its ground truth when the split has annotations.

    Attributes:
        question_id: the official question id (e.g. ``458752000``).
        image_id: the COCO image id.
        question: the question text.
        image_path: ``<image_root>/COCO_<subtype>_<12-digit image_id>.jpg``.
        answers: the annotators' raw answers (10 in VQA v2), in file order; empty for test.
        multiple_choice_answer: the most frequent answer (``None`` for test).
        answer_type: ``"yes/no"``, ``"number"`` or ``"other"`` (``None`` for test).
        question_type: e.g. ``"what color is the"`` (``None`` for test).
    """

    question_id: int
    image_id: int
    question: str
    image_path: str
    answers: list[str] = field(default_factory=list)
    multiple_choice_answer: str | None = None
    answer_type: str | None = None
    question_type: str | None = None

    @property
    def has_answers(self) -> bool:
        """Whether ground-truth answers are known (not a test question)."""
        return bool(self.answers)


def coco_image_name(subtype: str, image_id: int) -> str:
    """The official COCO file name, e.g. ``COCO_train2014_000000458752.jpg``."""
    return f"COCO_{subtype}_{int(image_id):012d}.jpg"


def _subtype(data: dict, questions: str | os.PathLike) -> str:
    """``data_subtype`` of the questions file, else the subtype in its official file name."""
    sub = data.get("data_subtype")
    if isinstance(sub, str) and sub:
        return sub
    m = _SUBTYPE_IN_NAME.match(Path(questions).name)
    if m:
        return m.group(1)
    raise DataFormatError(
        f"{os.fspath(questions)}: top level: no 'data_subtype' field and the file name is not "
        "v2_OpenEnded_mscoco_<subtype>_questions.json; pass subtype= (e.g. 'train2014'), as the "
        "manifest's 'subtype' role does"
    )


def _read_annotations(path: str | os.PathLike) -> dict[int, dict]:
    """``{question_id: parsed annotation fields}`` of an annotations file, checked."""
    data = load_json(path)
    out: dict[int, dict] = {}
    for i, ann in enumerate(require_typed(data, "annotations", list, path, "top level")):
        where = f"annotations[{i}]"
        qid = require_typed(ann, "question_id", int, path, where)
        where += f" (question_id {qid})"
        raw = require_typed(ann, "answers", list, path, where)
        if not raw:
            raise DataFormatError(f"{os.fspath(path)}: {where}: 'answers' is empty")
        answers = [
            require_typed(a, "answer", str, path, f"{where}.answers[{j}]")
            for j, a in enumerate(raw)
        ]
        if qid in out:
            raise DataFormatError(f"{os.fspath(path)}: {where}: question_id {qid} appears twice")
        out[qid] = {
            "image_id": require_typed(ann, "image_id", int, path, where),
            "answers": answers,
            "multiple_choice_answer": require_typed(
                ann, "multiple_choice_answer", str, path, where
            ),
            "answer_type": require_typed(ann, "answer_type", str, path, where),
            "question_type": require_typed(ann, "question_type", str, path, where),
            "where": where,
        }
    return out


def read_vqa(
    questions: str | os.PathLike,
    image_root: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    subtype: str | None = None,
) -> list[VQAQuestion]:
    """VQA v2 questions in file order, joined with their annotations when given.

    Args:
        questions: ``v2_OpenEnded_mscoco_<subtype>_questions.json``.
        image_root: folder holding ``COCO_<subtype>_<id>.jpg`` (e.g. ``.../train2014``).
        annotations: ``v2_mscoco_<subtype>_annotations.json``; ``None`` for test splits (the
            records then have no answers).
        subtype: e.g. ``"train2014"``; default: the file's ``data_subtype`` field, else the
            subtype in the official file name.

    Raises:
        DataFormatError: malformed JSON, a missing field or one of the wrong type, a question
            without an annotation, or ids that disagree; the message names file, record, field.
    """
    data = load_json(questions)
    items = require_typed(data, "questions", list, questions, "top level")
    subtype = subtype or _subtype(data, questions)
    anns = _read_annotations(annotations) if annotations is not None else None
    root = os.fspath(image_root)
    records = []
    for i, q in enumerate(items):
        where = f"questions[{i}]"
        qid = require_typed(q, "question_id", int, questions, where)
        where += f" (question_id {qid})"
        image_id = require_typed(q, "image_id", int, questions, where)
        text = require_typed(q, "question", str, questions, where)
        rec = VQAQuestion(
            question_id=qid,
            image_id=image_id,
            question=text,
            image_path=os.path.join(root, coco_image_name(subtype, image_id)),
        )
        if anns is not None:
            ann = anns.get(qid)
            if ann is None:
                raise DataFormatError(
                    f"{os.fspath(questions)}: {where}: no annotation with this question_id in "
                    f"{os.fspath(annotations)}; are the two files of the same subtype?"
                )
            if ann["image_id"] != image_id:
                raise DataFormatError(
                    f"{os.fspath(annotations)}: {ann['where']}: field 'image_id' is "
                    f"{ann['image_id']}, but the question says {image_id}"
                )
            rec.answers = ann["answers"]
            rec.multiple_choice_answer = ann["multiple_choice_answer"]
            rec.answer_type = ann["answer_type"]
            rec.question_type = ann["question_type"]
        records.append(rec)
    return records
