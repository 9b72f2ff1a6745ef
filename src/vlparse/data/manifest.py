"""The data manifest: one JSON file naming every annotation file and image folder by role.

Layout (see ``docs/manifest.md``)::

    {"name": "...", "format_version": 1,
     "<dataset>": {"<split>": {"<role>": "<path relative to the manifest>" | value, ...}, ...}}

:func:`load_manifest` resolves the path-valued roles (:data:`PATH_KEYS`) to absolute paths;
other values (e.g. ``"subtype": "train2014"``) are kept as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vlparse.errors import ManifestError

__all__ = [
    "PATH_KEYS", "TEXT_KEYS", "ManifestError", "load_manifest", "manifest_entry", "manifest_role",
    "manifest_texts", "write_manifest",
]

#: Role keys whose string values are paths (relative to the manifest's folder unless absolute).
PATH_KEYS = frozenset({"image_root", "karpathy", "questions", "annotations",
                       "region_descriptions", "image_data", "instances", "scenes"})


#: Keys whose string values are texts in the official formats (Karpathy ``raw``, VG ``phrase``,
#: VQA questions and answers, NLVR2 / SNLI-VE sentences, MDETR captions, COCO category names).
TEXT_KEYS = frozenset({"raw", "phrase", "question", "answer", "multiple_choice_answer",
                       "sentence", "sentence1", "sentence2", "caption", "name"})


def _resolve(node: Any, base: Path) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in PATH_KEYS and isinstance(v, str):
                p = Path(os.path.expanduser(v))
                out[k] = str(p if p.is_absolute() else (base / p).resolve())
            else:
                out[k] = _resolve(v, base)
        return out
    if isinstance(node, list):
        return [_resolve(v, base) for v in node]
    return node


def load_manifest(path: str | Path) -> dict:
    """Read a manifest and return ``{dataset: {split: {role: absolute path or value}}}`` (plus
    top-level metadata such as ``name``, ``format_version``, ``generator``).

    Raises:
        ManifestError: the file is missing, is not valid JSON (the message gives line and
            column), or is not a JSON object.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}; generate one with "
                            "vlparse.data.synthetic.generate or write one (docs/manifest.md)"
                            ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest must be a JSON object, got "
                            f"{type(data).__name__}")
    return _resolve(data, path.parent.resolve())


def manifest_entry(manifest: dict, dataset: str, split: str) -> dict:
    """The role dict of ``manifest[dataset][split]``; the error lists what is available."""
    datasets = sorted(k for k, v in manifest.items() if isinstance(v, dict) and k != "generator")
    if dataset not in manifest or dataset not in datasets:
        raise ManifestError(f"manifest has no dataset {dataset!r}; available: "
                            f"{', '.join(datasets) or '(none)'}")
    splits = manifest[dataset]
    if split not in splits or not isinstance(splits[split], dict):
        raise ManifestError(f"manifest dataset {dataset!r} has no split {split!r}; available: "
                            f"{', '.join(sorted(splits)) or '(none)'}")
    return splits[split]


def manifest_role(entry: dict, role: str, where: str) -> Any:
    """The file or folder that ``entry`` (one data set split of a manifest) gives for ``role``.

    Raises:
        ManifestError: naming ``where`` and the roles the entry has, when ``role`` is missing.
    """
    if role not in entry:
        raise ManifestError(
            f"manifest {where}: missing role '{role}' (roles present: {', '.join(sorted(entry))})"
        )
    return entry[role]


def write_manifest(path: str | Path, data: dict) -> Path:
    """Write ``data`` as an indented JSON manifest (paths should be relative to its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def _texts_in(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in TEXT_KEYS and isinstance(v, str):
                out.add(v)
            else:
                _texts_in(v, out)
    elif isinstance(node, list):
        for v in node:
            _texts_in(v, out)


def manifest_texts(manifest: dict) -> list[str]:
    """Every distinct text (:data:`TEXT_KEYS`) of every JSON or JSON-lines annotation file that a
    loaded manifest names, sorted; e.g. to prune a tokenizer to a corpus
    (:func:`vlparse.processing.tokenization.prune_tokenizer`). The generator's files (the scene
    world's ground truth) hold no texts and are not read.

    Raises:
        DataFormatError: a named file is neither JSON nor JSON lines (file, line and column
            given).
    """
    from vlparse.data.formats.jsonio import load_json, load_jsonl
    from vlparse.errors import DataFormatError

    files: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in PATH_KEYS and isinstance(v, str) and Path(v).is_file():
                    files.add(v)
                elif k != "generator":
                    collect(v)

    collect(manifest)
    texts: set[str] = set()
    for name in sorted(files):
        try:
            data = load_json(name)
        except DataFormatError:  # JSON lines (NLVR2, SNLI-VE)
            data = load_jsonl(name)
        _texts_in(data, texts)
    return sorted(texts)
