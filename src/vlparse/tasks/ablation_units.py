"""Units of the Table 5 ablation kept as files, so that the table can grow over several short
runs on different machines (one row and seed at a time) and its numbers can be committed.

A unit file ``<row>-seed<k>.json`` has the shape of ``reports/results.schema.json``: the commit,
hardware and date of the run that made it, its command, and in ``results`` the experiment's
arguments (``experiment``, checked against the current run's: a unit of another experiment is
refused, not mixed in) and the unit's summary (``unit``: ``f1L``, ``score``, ``metric``, the
stages' steps and times). ``vlparse ablate --units DIR`` reads the units in ``DIR``, runs only
the missing ones (``--max-units N``: at most ``N`` of them) and writes each new one there (or to
``--units-out``).
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vlparse.errors import AblationMismatchError
from vlparse.io.files import atomic_write_json

__all__ = ["UNIT_TOPIC", "read_unit", "unit_path", "write_unit"]

UNIT_TOPIC = "table5-ablation-unit"


def unit_path(folder: str | Path, row: str, seed: int) -> Path:
    """``folder/<row>-seed<seed>.json``."""
    return Path(folder) / f"{row}-seed{seed}.json"


def read_unit(folders: list[Path], row: str, seed: int,
              experiment: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of unit ``(row, seed)`` from the first of ``folders`` that holds it, or
    ``None``.

    Raises:
        AblationMismatchError: the unit file was made with other experiment arguments.
    """
    for folder in folders:
        path = unit_path(folder, row, seed)
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        stored = record["results"]["experiment"]
        diff = [k for k in sorted(set(stored) | set(experiment))
                if stored.get(k) != experiment.get(k)]
        if diff:
            parts = "; ".join(f"{k}: unit {stored.get(k)!r}, now {experiment.get(k)!r}"
                              for k in diff)
            raise AblationMismatchError(
                f"{path}: this unit belongs to another experiment ({parts}); run with its "
                "arguments, or point --units at a folder of this experiment's units")
        return record["results"]["unit"]
    return None


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}), {torch.get_num_threads()} threads"


def write_unit(folder: str | Path, unit: dict[str, Any], experiment: dict[str, Any],
               argv: list[str] | None = None) -> Path:
    """Write one unit's file (atomically) with its provenance; returns its path."""
    from vlparse.train.runinfo import git_info

    git = git_info()
    argv = sys.argv[1:] if argv is None else argv
    record: dict[str, Any] = {
        "topic": UNIT_TOPIC,
        "question": "F^{1,L} and the fine-tuned score of one row and seed of the Table 5 "
                    "ablation",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": git["commit"],
        "hardware": _hardware(),
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "commands": [shlex.join(["vlparse", *argv])],
        "results": {"experiment": experiment, "unit": unit},
    }
    if git["dirty"] is not None:
        record["dirty"] = git["dirty"]
    path = unit_path(folder, unit["row"], unit["seed"])
    atomic_write_json(path, record)
    return path
