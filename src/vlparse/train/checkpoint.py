"""Checkpoints: safetensors weights plus ``state.pt`` (optimizer, scheduler, RNG, loop state).

Layout of a run folder::

    run_dir/checkpoints/
        step_00001000/model.safetensors   model state dict (tied tensors stored once)
        step_00001000/state.pt            optimizer, scheduler, RNG states, extra_state
        latest                            text file holding the newest folder name

Writes are atomic: a checkpoint is written to a hidden temporary folder and renamed into place,
and ``latest`` is replaced with ``os.replace``; a crash mid-save leaves the previous checkpoint
and ``latest`` untouched. Only one process may write (rank 0 under DDP); this is the caller's
responsibility. ``state.pt`` is a pickle: load only checkpoints you trust.

RNG states are those of the saving process. After a DDP resume every rank restores rank 0's
states; the data pipeline is keyed by ``(seed, epoch, index)`` so batches do not depend on them.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from vlparse.models.weights import LoadReport, read_state_dict
from vlparse.utils import atomic_write_text

__all__ = [
    "LoadReport",
    "unwrap_model",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
]

WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.pt"
LATEST_NAME = "latest"
_STEP_RE = re.compile(r"^step_(\d{8,})$")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# --------------------------------------------------------------------------- helpers


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def capture_rng_state() -> dict[str, Any]:
    """States of python ``random``, numpy, torch CPU and every CUDA device (if any)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured. CUDA states are restored for as many
    devices as both the checkpoint and this machine have (a warning says when they differ)."""
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if len(cuda_states) != n:
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda_states)} devices, this machine has "
                f"{n}; restoring the first {min(n, len(cuda_states))}",
                stacklevel=2,
            )
        for i, s in enumerate(cuda_states[:n]):
            torch.cuda.set_rng_state(s.cpu(), i)


def _step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoint folders (both files present) under ``ckpt_root``, oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for p in ckpt_root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / WEIGHTS_NAME).is_file() and (p / STATE_NAME).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


# --------------------------------------------------------------------------- save


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    extra_state: dict[str, Any] | None,
    keep: int = 3,
) -> Path:
    """Write ``run_dir/checkpoints/step_<8 digits>/`` atomically, point ``latest`` at it and
    delete older checkpoints beyond the ``keep`` newest (``keep=0`` keeps all; the one just
    written is never deleted). Call on rank 0 only. Returns the checkpoint folder.

    ``extra_state`` is the loop's own state (step, epoch, batch in epoch, sampler state, bad-image
    counters...); it is returned by :func:`load_checkpoint`.
    """
    if step < 0:
        raise ValueError(f"save_checkpoint: step must be >= 0, got {step}")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a crashed save; only one process writes here
        shutil.rmtree(stale, ignore_errors=True)
    name = _step_dir_name(step)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    try:
        tmp.mkdir()
        bare = unwrap_model(model)
        safetensors.torch.save_model(bare, str(tmp / WEIGHTS_NAME), metadata={"step": str(step)})
        state = {
            "format_version": 1,
            "step": step,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": capture_rng_state(),
            "extra_state": dict(extra_state or {}),
        }
        torch.save(state, tmp / STATE_NAME)
        if final.exists():  # re-saving the same step: swap the old folder out first
            old = root / f".tmp-old-{name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST_NAME, name + "\n")
    if keep > 0:
        older = [p for p in list_checkpoints(root) if p.name != name]
        excess = len(older) - (keep - 1)
        for p in older[: max(excess, 0)]:
            shutil.rmtree(p, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- find


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run folder, its ``checkpoints`` folder, a step folder or a ``model.safetensors``
    file to a checkpoint folder. ``latest`` is followed; if it is missing or broken the newest
    complete checkpoint is used. Raises ``FileNotFoundError`` listing what exists otherwise."""
    path = Path(path)
    if path.is_file() and path.name == WEIGHTS_NAME:
        path = path.parent
    if (path / WEIGHTS_NAME).is_file():
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = root / LATEST_NAME
    if latest.is_file():
        target = root / latest.read_text().strip()
        if (target / WEIGHTS_NAME).is_file() and (target / STATE_NAME).is_file():
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


# --------------------------------------------------------------------------- load


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a ``module.`` / ``_orig_mod.`` prefix that every key carries (wrapped saves)."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Non-strict load that skips shape mismatches (noted) and does not report a tied alias as
    missing when the tensor it shares storage with was loaded."""
    own = model.state_dict(keep_vars=True)
    notes, usable = [], {}
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            notes.append(f"skipped '{k}': shape {tuple(v.shape)} in file, "
                         f"{tuple(own[k].shape)} in model")
        else:
            usable[k] = v
    result = model.load_state_dict(usable, strict=False)
    loaded_ptrs = {own[k].data_ptr() for k in usable if k in own}
    missing = [k for k in result.missing_keys
               if own[k].data_ptr() not in loaded_ptrs or own[k].numel() == 0]
    skipped = [n.split("'")[1] for n in notes]
    return LoadReport(missing=sorted(set(missing) | set(skipped)),
                      unexpected=sorted(result.unexpected_keys), notes=notes)


def _key_summary(keys: list[str], limit: int = 20) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_checkpoint(
    ckpt_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` (any path form accepted by
    :func:`find_checkpoint`). Model weights load strictly; a mismatch raises ``RuntimeError``
    naming the missing and unexpected keys. Returns ``extra_state`` (with ``step`` added if the
    loop did not store it)."""
    ckpt = find_checkpoint(ckpt_dir)
    bare = unwrap_model(model)
    weights = _strip_wrapper_prefixes(read_state_dict(ckpt / WEIGHTS_NAME))
    report = _load_into(bare, weights)
    if report.missing or report.unexpected:
        raise RuntimeError(
            f"{ckpt / WEIGHTS_NAME} does not match the model ({type(bare).__name__}): "
            f"missing keys [{_key_summary(report.missing)}]; unexpected keys "
            f"[{_key_summary(report.unexpected)}]. {' '.join(report.notes)} Build the model "
            "with the config saved in the run folder (config.yaml), or use load_model_weights "
            "for a non-strict load."
        )
    state = torch.load(ckpt / STATE_NAME, map_location=map_location, weights_only=False)
    if optimizer is not None:
        if state.get("optimizer") is None:
            raise RuntimeError(f"{ckpt / STATE_NAME} holds no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        if state.get("scheduler") is None:
            raise RuntimeError(f"{ckpt / STATE_NAME} holds no scheduler state")
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and state.get("rng"):
        restore_rng_state(state["rng"])
    extra = dict(state.get("extra_state") or {})
    extra.setdefault("step", state.get("step"))
    return extra


def load_model_weights(path: str | Path, model: nn.Module) -> LoadReport:
    """Non-strict weight load for fine-tuning: ``path`` is a run or checkpoint folder (see
    :func:`find_checkpoint`), a ``.safetensors`` file or a torch state-dict file. Tensors whose
    shape differs are skipped and noted. Returns the missing / unexpected keys."""
    path = Path(path)
    file = path if path.is_file() else find_checkpoint(path) / WEIGHTS_NAME
    weights = _strip_wrapper_prefixes(read_state_dict(file))
    return _load_into(unwrap_model(model), weights)
