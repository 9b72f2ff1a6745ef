"""Training state in and out of checkpoints: weights, optimizer, scheduler, RNG of every process
and the loop's own state, on top of the files of :mod:`vlparse.io.checkpoint` (no pickle).

RNG states are gathered from every process when a checkpoint is written, and each process
restores its own on ``--resume`` (ranks draw different dropout: ``seed_everything(seed, rank)``).
When the number of processes changed, a process without a saved state keeps its fresh seed.

Resuming takes the checkpoint ``latest`` names; one that is damaged (a truncated or missing file)
is named in a warning and the next older intact one is used. A checkpoint of the old format
(``state.pt``, a pickle) is refused, never unpickled.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlparse.errors import CheckpointError, LegacyCheckpointError
from vlparse.io.checkpoint import (
    Checkpoint,
    find_checkpoint,
    list_checkpoints,
    read_checkpoint,
    read_weights,
    resume_candidates,
    unwrap_model,
)
from vlparse.io.checkpoint import save_checkpoint as _save_files
from vlparse.io.state import pack, unpack
from vlparse.models.weights import LoadReport, read_state_dict
from vlparse.train.distributed import DistInfo, all_gather_bytes, barrier

__all__ = [
    "LoadReport",
    "unwrap_model",
    "capture_rng_state",
    "restore_rng_state",
    "gather_rng_states",
    "save_checkpoint",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "apply_checkpoint",
    "read_resumable",
]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# --------------------------------------------------------------------------- RNG


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
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        np.random.set_state(tuple(state["numpy"]))
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
    """:func:`vlparse.io.checkpoint.save_checkpoint` with this process's RNG state unless
    ``rng`` (one state per process) is given."""
    return _save_files(run_dir, step, model, optimizer, scheduler, extra_state, keep,
                       rng=[capture_rng_state()] if rng is None else rng)


def gather_rng_states(dist: DistInfo) -> list[dict[str, Any]]:
    """The RNG state of every process in rank order (a collective: every process calls it)."""
    return [unpack(b) for b in all_gather_bytes(pack(capture_rng_state()), dist.device)]


# --------------------------------------------------------------------------- weights


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


def load_model_weights(path: str | Path, model: nn.Module) -> LoadReport:
    """Non-strict weight load for fine-tuning: ``path`` is a run or checkpoint folder (see
    :func:`find_checkpoint`), a ``.safetensors`` file or a torch state-dict file (read with
    ``weights_only=True``). Tensors whose shape differs are skipped and noted. Returns the
    missing / unexpected keys; a damaged file raises a CheckpointError naming it."""
    path = Path(path)
    file = path if path.is_file() else find_checkpoint(path) / "model.safetensors"
    weights = read_weights(file) if file.suffix == ".safetensors" else read_state_dict(file)
    return _load_into(unwrap_model(model), _strip_wrapper_prefixes(weights))


# --------------------------------------------------------------------------- training state


def apply_checkpoint(
    ckpt: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    rng_index: int | None = 0,
) -> dict[str, Any]:
    """Load a read checkpoint into ``model`` (strictly), ``optimizer`` and ``scheduler`` and
    restore the RNG state saved by process ``rng_index`` (``None``: leave the RNG alone). Returns
    ``extra_state`` with ``step`` added."""
    bare = unwrap_model(model)
    report = _load_into(bare, _strip_wrapper_prefixes(ckpt.weights))
    if report.missing or report.unexpected:
        raise CheckpointError(
            ckpt.path / "model.safetensors",
            f"does not match the model ({type(bare).__name__}): missing keys "
            f"[{_key_summary(report.missing)}]; unexpected keys "
            f"[{_key_summary(report.unexpected)}]. {' '.join(report.notes)} Build the model with "
            "the config saved in the run folder (config.yaml), or use load_model_weights for a "
            "non-strict load",
        )
    for name, obj, saved in (("optimizer", optimizer, ckpt.optimizer),
                             ("scheduler", scheduler, ckpt.scheduler)):
        if obj is None:
            continue
        if saved is None:
            raise CheckpointError(ckpt.path, f"holds no {name} state")
        obj.load_state_dict(_match_types(saved, obj.state_dict()))
    if rng_index is not None and rng_index < len(ckpt.rng):
        restore_rng_state(ckpt.rng[rng_index])
    extra = dict(ckpt.extra_state)
    extra.setdefault("step", ckpt.step)
    return extra


def _match_types(saved: Any, live: Any) -> Any:
    """``saved`` with each list turned back into a tuple where the live state dict holds a
    tuple (``betas``), so that a restored state dict equals the saved one."""
    if isinstance(saved, dict) and isinstance(live, dict):
        return {k: _match_types(v, live.get(k)) for k, v in saved.items()}
    if isinstance(saved, (list, tuple)) and isinstance(live, (list, tuple)):
        items = [_match_types(v, live[i] if i < len(live) else None) for i, v in enumerate(saved)]
        return tuple(items) if isinstance(live, tuple) else items
    return saved


def load_checkpoint(
    ckpt_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` (any path form accepted by
    :func:`find_checkpoint`). Model weights load strictly; a mismatch raises a CheckpointError
    naming the missing and unexpected keys. Returns ``extra_state`` (with ``step``)."""
    ckpt = read_checkpoint(find_checkpoint(ckpt_dir))
    return apply_checkpoint(ckpt, model, optimizer, scheduler, 0 if restore_rng else None)


def read_resumable(run_dir: Path, warn: Callable[[str], None]) -> Checkpoint | None:
    """The newest intact checkpoint of ``run_dir`` (the one ``latest`` names first), or ``None``
    when there is none at all. A damaged one is named through ``warn`` and skipped.

    Raises:
        LegacyCheckpointError: the checkpoint to resume from has the old pickle format.
        CheckpointError: checkpoints exist but none is intact.
    """
    broken: list[str] = []
    for folder in resume_candidates(run_dir):
        try:
            ckpt = read_checkpoint(folder)
        except LegacyCheckpointError:
            raise
        except CheckpointError as e:
            broken.append(str(e))
            continue
        if broken:
            warn(f"--resume: skipped {len(broken)} damaged checkpoint(s) ({'; '.join(broken)}); "
                 f"resuming from {folder.name}, the newest intact one")
        return ckpt
    if broken:
        raise CheckpointError(run_dir / "checkpoints", "no intact checkpoint to resume from: "
                              + "; ".join(broken))
    return None


def save_training_state(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra_state: dict[str, Any],
    keep: int,
    dist: DistInfo,
) -> Path | None:
    """A checkpoint of the whole training state, written by the main process with the RNG
    states of every process (a collective: every process calls it). Returns the folder on the
    main process, ``None`` elsewhere."""
    rng = gather_rng_states(dist)
    path = None
    if dist.is_main:
        path = save_checkpoint(run_dir, step, model, optimizer, scheduler, extra_state, keep,
                               rng=rng)
    barrier()
    return path
