"""Checkpoint files: written atomically, read without unpickling, checked before use.

Layout of a run folder::

    run_dir/checkpoints/
        step_00001000/model.safetensors   model state dict (tied tensors stored once)
        step_00001000/state.safetensors   every tensor of the optimizer, scheduler and RNG state
        step_00001000/state.json          the rest of that state (tensors referenced by name),
                                          the loop state, and the size of each file
        latest                            text file holding the newest folder name

No file of a checkpoint can run code when read: tensors are safetensors, everything else JSON
(see :mod:`vlparse.io.state`). A checkpoint of the old format (``state.pt``, a pickle) is
refused with a :class:`~vlparse.errors.LegacyCheckpointError`; :func:`convert_legacy_checkpoint`
(``vlparse convert-checkpoint``) converts one that the user trusts.

Writes are atomic: a checkpoint is written to a hidden temporary folder named after its process
(``.tmp-step_XXXXXXXX-<pid>@<host>``) and renamed into place, and ``latest`` is replaced
atomically; a crash (even ``kill -9``) mid-save leaves the previous checkpoint and ``latest``
untouched, and the next save removes the temporary folders of dead processes only. Reading checks
every file against the sizes recorded in ``state.json``, so a truncated file is named instead of
failing deep inside a reader. Only one process may write (rank 0 under DDP), holding the run
folder's lock (:mod:`vlparse.io.runs`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from vlparse.errors import CheckpointError, LegacyCheckpointError
from vlparse.io.files import apply_umask, atomic_write_bytes, atomic_write_text, fsync_dir
from vlparse.io.state import StateFormatError, decode, encode

__all__ = [
    "WEIGHTS_NAME",
    "STATE_JSON",
    "STATE_TENSORS",
    "LEGACY_STATE",
    "Checkpoint",
    "unwrap_model",
    "save_checkpoint",
    "list_checkpoints",
    "find_checkpoint",
    "resume_candidates",
    "read_checkpoint",
    "read_weights",
    "clean_stale_tmp",
    "convert_legacy_checkpoint",
    "export_pretrained",
]

WEIGHTS_NAME = "model.safetensors"
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
LEGACY_STATE = "state.pt"
LATEST_NAME = "latest"
FORMAT = "vlparse-checkpoint"
FORMAT_VERSION = 2
_STEP_RE = re.compile(r"^step_(\d{8,})$")
_TMP_RE = re.compile(r"^\.tmp-(?:old-)?step_\d{8,}-(\d+)(?:@(.+))?$")


@dataclass
class Checkpoint:
    """A checkpoint read back: ``weights`` (the model's state dict), the optimizer and scheduler
    state dicts (``None`` when not saved), ``rng`` (one RNG state per process that saved it) and
    ``extra_state`` (the loop's own state)."""

    path: Path
    step: int
    weights: dict[str, Tensor]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    rng: list[dict[str, Any]] = field(default_factory=list)
    extra_state: dict[str, Any] = field(default_factory=dict)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _tmp_suffix() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _step_folders(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(found)


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint folders under ``ckpt_root`` whose weights file is present, oldest first."""
    return [p for _, p in _step_folders(Path(ckpt_root)) if (p / WEIGHTS_NAME).is_file()]


# --------------------------------------------------------------------------- save


def _write_state(folder: Path, step: int, tree: dict[str, Any], tensors: dict[str, Tensor]):
    """``state.safetensors`` and then ``state.json`` (with every file's size) into ``folder``."""
    safetensors.torch.save_file(tensors, str(folder / STATE_TENSORS))
    files = {name: (folder / name).stat().st_size for name in (WEIGHTS_NAME, STATE_TENSORS)
             if (folder / name).is_file()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, "files": files,
            **tree}
    (folder / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    for name in (*files, STATE_JSON):
        apply_umask(folder / name)  # safetensors writes its files 0o600
        with open(folder / name, "rb") as f:
            os.fsync(f.fileno())


def _state_tree(optimizer, scheduler, rng, extra_state) -> tuple[dict, dict[str, Tensor]]:
    tensors: dict[str, Tensor] = {}
    tree = {
        "optimizer": encode(optimizer.state_dict(), tensors, "optimizer")
        if optimizer is not None else None,
        "scheduler": encode(scheduler.state_dict(), tensors, "scheduler")
        if scheduler is not None else None,
        "rng": encode(list(rng), tensors, "rng"),
        "extra_state": encode(dict(extra_state or {}), tensors, "extra_state"),
    }
    return tree, tensors


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra_state: dict[str, Any] | None = None,
    keep: int = 3,
    rng: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/step_<8 digits>/`` atomically, point ``latest`` at it and
    delete older checkpoints beyond the ``keep`` newest (``keep=0`` keeps all; the one just
    written is never deleted). Call on one process only. Returns the checkpoint folder.

    ``extra_state`` is the loop's own state (JSON-ready values and tensors); ``rng`` one RNG
    state per process (:func:`vlparse.train.checkpoint.capture_rng_state`), default none.
    """
    if step < 0:
        raise ValueError(f"save_checkpoint: step must be >= 0, got {step}")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(root)
    name = _step_dir_name(step)
    final = root / name
    tmp = root / f".tmp-{name}-{_tmp_suffix()}"
    tree, tensors = _state_tree(optimizer, scheduler, rng or [], extra_state)
    try:
        tmp.mkdir()
        safetensors.torch.save_model(unwrap_model(model), str(tmp / WEIGHTS_NAME),
                                     metadata={"step": str(step)})
        _write_state(tmp, step, tree, tensors)
        if final.exists():  # re-saving the same step: swap the old folder out first
            old = root / f".tmp-old-{name}-{_tmp_suffix()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    atomic_write_text(root / LATEST_NAME, name + "\n")
    if keep > 0:
        older = [p for _, p in _step_folders(root) if p.name != name]
        for p in older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(p, ignore_errors=True)
    return final


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_tmp(root: Path) -> list[Path]:
    """Remove the temporary folders that a save of a dead process left under ``root`` (on this
    host; a folder of a live process, of another host or of unknown origin is left alone).
    Returns what was removed."""
    removed = []
    if not root.is_dir():
        return removed
    host = socket.gethostname()
    for p in root.glob(".tmp-*"):
        m = _TMP_RE.match(p.name)
        if m is None or (m.group(2) not in (None, host)):
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# --------------------------------------------------------------------------- find


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run folder, its ``checkpoints`` folder, a step folder or a ``model.safetensors``
    file to a checkpoint folder with a weights file. ``latest`` is followed; if it is missing or
    broken the newest checkpoint is used. Raises ``FileNotFoundError`` listing what exists
    otherwise."""
    path = Path(path)
    if path.is_file() and path.name == WEIGHTS_NAME:
        path = path.parent
    if (path / WEIGHTS_NAME).is_file():
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = root / LATEST_NAME
    if latest.is_file():
        target = root / latest.read_text().strip()
        if (target / WEIGHTS_NAME).is_file():
            return target
        warnings.warn(
            f"{latest} names '{target.name}', which is missing or incomplete; "
            "falling back to the newest complete checkpoint",
            stacklevel=2,
        )
    found = list_checkpoints(root)
    if found:
        return found[-1]
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: the path does not exist")
    listing = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise FileNotFoundError(
        f"no checkpoint found under {path}: expected a run folder with checkpoints/, a "
        f"checkpoints folder with step_XXXXXXXX/ subfolders, or a folder holding {WEIGHTS_NAME}; "
        f"{root} contains: {', '.join(listing) or '(nothing)'}"
    )


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """The checkpoint folders of a run to resume from, best first: the one ``latest`` names,
    then every other step folder, newest first (intact or not: :func:`read_checkpoint` says)."""
    root = Path(run_dir) / "checkpoints"
    folders = [p for _, p in reversed(_step_folders(root))]
    latest = root / LATEST_NAME
    if latest.is_file():
        named = root / latest.read_text().strip()
        if named in folders:
            folders.remove(named)
            folders.insert(0, named)
    return folders


# --------------------------------------------------------------------------- read


def legacy_help(state_file: Path) -> str:
    """What to tell a user about an old-format ``state.pt``."""
    run = state_file.parent.parent.parent if state_file.parent.parent.name == "checkpoints" \
        else state_file.parent
    return (
        "an old-format checkpoint: its state is a pickle, which can run code when loaded, so "
        "vlparse does not load it. If you trust where it comes from, convert it once with "
        f"'vlparse convert-checkpoint {run} --trust' and run again"
    )


def read_weights(file: str | Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file, or a :class:`CheckpointError` naming the file."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(file, "missing")
    try:
        return safetensors.torch.load_file(str(file), device="cpu")
    except Exception as e:  # safetensors raises its own error type, or OSError
        raise CheckpointError(file, f"cannot be read, the file is damaged or truncated "
                                    f"({type(e).__name__}: {e})") from None


def _read_meta(folder: Path) -> dict[str, Any]:
    meta_file = folder / STATE_JSON
    if not meta_file.is_file():
        if (folder / LEGACY_STATE).is_file():
            raise LegacyCheckpointError(folder / LEGACY_STATE, legacy_help(folder / LEGACY_STATE))
        raise CheckpointError(folder, f"no {STATE_JSON}: not a complete checkpoint")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(meta_file, f"is not valid JSON, the file is damaged or truncated "
                                         f"({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(meta_file, f"is not a {FORMAT} state file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(meta_file, f"has format version {meta.get('format_version')!r}; "
                                         f"this vlparse reads version {FORMAT_VERSION}")
    for name, size in (meta.get("files") or {}).items():
        actual = (folder / name).stat().st_size if (folder / name).is_file() else None
        if actual is None:
            raise CheckpointError(folder / name, "missing")
        if actual != size:
            raise CheckpointError(folder / name, f"is {actual} bytes, the checkpoint recorded "
                                                 f"{size}: truncated or replaced")
    return meta


def read_checkpoint(folder: str | Path) -> Checkpoint:
    """Read and check every file of a checkpoint folder (nothing is unpickled).

    Raises:
        LegacyCheckpointError: the folder holds an old-format ``state.pt``.
        CheckpointError: a file is missing, truncated or malformed; the message names it.
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    weights = read_weights(folder / WEIGHTS_NAME)
    tensors = read_weights(folder / STATE_TENSORS)
    try:
        rng = decode(meta.get("rng") or [], tensors)
        return Checkpoint(
            path=folder,
            step=int(meta["step"]),
            weights=weights,
            optimizer=decode(meta.get("optimizer"), tensors),
            scheduler=decode(meta.get("scheduler"), tensors),
            rng=list(rng),
            extra_state=dict(decode(meta.get("extra_state") or {}, tensors)),
        )
    except (StateFormatError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(folder / STATE_JSON, f"malformed state ({e})") from None


# --------------------------------------------------------------------------- export


def export_pretrained(model: nn.Module, run_dir: Path, processor: Any = None) -> Path | None:
    """``model.save_pretrained(run_dir / "model", processor=processor)`` when the model has it,
    written to a temporary folder first and swapped in; ``None`` when it has not."""
    bare = unwrap_model(model)
    if not hasattr(bare, "save_pretrained"):
        return None
    final, tmp = run_dir / "model", run_dir / f".tmp-model-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if processor is None:
        bare.save_pretrained(tmp)
    else:
        bare.save_pretrained(tmp, processor=processor)
    for f in tmp.rglob("*"):
        if f.is_file():
            apply_umask(f)  # safetensors writes its files 0o600
    if final.exists():
        old = run_dir / f".tmp-old-model-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    return final


# --------------------------------------------------------------------------- old format


def convert_legacy_checkpoint(path: str | Path) -> list[Path]:
    """Convert the old-format checkpoints (``state.pt``, a pickle) under ``path`` (a run folder,
    its ``checkpoints`` folder or one step folder) to this format, in place; ``state.pt`` is
    removed. Returns the converted folders.

    This unpickles ``state.pt``, which runs whatever code the file carries: call it only on
    checkpoints you trust (``vlparse convert-checkpoint PATH --trust`` does).
    """
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    folders = [path] if (path / LEGACY_STATE).is_file() else [p for _, p in _step_folders(root)]
    converted = []
    for folder in folders:
        legacy = folder / LEGACY_STATE
        if not legacy.is_file():
            continue
        state = torch.load(legacy, map_location="cpu", weights_only=False)  # trusted by caller
        rng = [state["rng"]] if state.get("rng") else []
        tree, tensors = _state_tree(None, None, rng, state.get("extra_state"))
        tree["optimizer"] = encode(state.get("optimizer"), tensors, "optimizer")
        tree["scheduler"] = encode(state.get("scheduler"), tensors, "scheduler")
        atomic_write_bytes(folder / STATE_TENSORS, safetensors.torch.save(tensors))
        files = {name: (folder / name).stat().st_size for name in (WEIGHTS_NAME, STATE_TENSORS)
                 if (folder / name).is_file()}
        step = int(state.get("step", 0))
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step,
                "files": files, **tree}
        atomic_write_text(folder / STATE_JSON, json.dumps(meta, indent=1) + "\n")
        legacy.unlink()
        converted.append(folder)
    return converted
