"""A benchmark's ``results.json``: its numbers with the command, commit, hardware and date that
produced them, in the shape of ``reports/results.schema.json`` (the same as a report's).

A file written outside a git checkout has ``"commit": null``; the schema rejects it, so such a
result cannot be committed as a report without naming its commit by hand.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vlparse.io.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def hardware(device: torch.device | str) -> str:
    """``"1x <GPU name>"`` for a CUDA device, else the CPU's core count and architecture."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"1x {torch.cuda.get_device_name(device)}"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), {torch.get_num_threads()} threads"


def write_results(path: str | Path | None, *, script: str, topic: str, question: str,
                  device: torch.device | str, results: dict[str, Any],
                  argv: list[str] | None = None) -> dict[str, Any]:
    """Wrap ``results`` with their provenance and write them to ``path`` (when given).

    Args:
        path: the JSON file to write, parents made (``None``: only return the record).
        script: the benchmark's file (``__file__``), named in ``commands`` from the repository root.
        topic: lower-case words joined by ``-``, e.g. ``"retrieval-speed"``.
        question: what the numbers answer, one sentence.
        device: the device the benchmark ran on (for ``hardware``).
        results: the numbers.
        argv: the script's arguments (default ``sys.argv[1:]``), for ``commands``.

    Returns:
        The record as written.
    """
    argv = sys.argv[1:] if argv is None else argv
    name = Path(script).resolve()
    name = name.relative_to(REPO) if name.is_relative_to(REPO) else Path(name.name)
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    record: dict[str, Any] = {
        "topic": topic,
        "question": question,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": commit,
        "hardware": hardware(device),
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "commands": [shlex.join(["python", name.as_posix(), *argv])],
        "results": results,
    }
    if status is not None:
        record["dirty"] = bool(status)
    if path is not None:
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record
