"""What a run was: resolved config, vlparse version and git commit, software and hardware.

``run_dir/config.yaml`` and ``run_dir/run_info.json`` are written once, at the start of a run.
A resumed run never overwrites them: it writes ``run_info.resume-<n>.json`` (and
``config.resume-<n>.yaml`` when its config differs from the original).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from vlparse.io.files import atomic_write_text

__all__ = ["collect_run_info", "write_run_info", "git_info", "config_changes"]

_RESUME_RE = re.compile(r"^run_info\.resume-(\d+)\.json$")


def _version(dist_name: str, module_name: str | None = None) -> str | None:
    """Installed version of a distribution, else the module's ``__version__``, else ``None``."""
    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        pass
    try:
        module = __import__(module_name or dist_name)
        return getattr(module, "__version__", None)
    except Exception:
        return None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(path: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha | None, "dirty": bool | None}`` of the git checkout holding ``path``
    (default: the vlparse package folder). ``None`` values when it is not a tracked part of a
    git repository (e.g. an installed wheel) or git is missing; never raises."""
    pkg = path or Path(__file__).resolve().parents[1]
    none = {"commit": None, "dirty": None}
    if not pkg.is_dir() or not _git(["ls-files", "--", "."], pkg):
        return none  # not a repo, or the package is not tracked in the enclosing repo
    commit = _git(["rev-parse", "HEAD"], pkg)
    if commit is None:
        return none
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", "."], pkg)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _cuda_info() -> dict[str, Any]:
    available = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "cuda_available": available,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if available else [],
    }


def collect_run_info(world_size: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of this process's software and hardware.

    ``world_size`` defaults to the ``WORLD_SIZE`` environment variable (1 when unset).
    """
    version = _version("vlparse")
    if version is None:
        version = "unknown"
    if world_size is None:
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            world_size = 1
    return {
        "vlparse": version,
        "git": git_info(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        **_cuda_info(),
        "world_size": world_size,
        "timm": _version("timm"),
        "transformers": _version("transformers"),
        "argv": list(sys.argv),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_run_info(
    run_dir: str | Path, config_dict: dict[str, Any], info: dict[str, Any] | None = None
) -> Path:
    """Write ``config.yaml`` and ``run_info.json`` into ``run_dir`` (created if needed) and return
    the run-info path. If ``run_info.json`` already exists (a resume), write
    ``run_info.resume-<n>.json`` with the next ``n`` instead, plus ``config.resume-<n>.yaml``
    when the config differs from ``config.yaml``. ``info`` defaults to
    :func:`collect_run_info`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = dict(info if info is not None else collect_run_info())
    config_text = yaml.safe_dump(config_dict, sort_keys=False)
    first = run_dir / "run_info.json"
    if not first.exists():
        if not (run_dir / "config.yaml").exists():
            atomic_write_text(run_dir / "config.yaml", config_text)
        atomic_write_text(first, json.dumps(info, indent=2, default=str) + "\n")
        return first
    taken = [int(m.group(1)) for p in run_dir.iterdir() if (m := _RESUME_RE.match(p.name))]
    n = max(taken, default=0) + 1
    original = run_dir / "config.yaml"
    same = original.exists() and yaml.safe_load(original.read_text()) == yaml.safe_load(config_text)
    info["resume"] = n
    info["config_changed"] = not same
    if not same:
        atomic_write_text(run_dir / f"config.resume-{n}.yaml", config_text)
    out = run_dir / f"run_info.resume-{n}.json"
    atomic_write_text(out, json.dumps(info, indent=2, default=str) + "\n")
    return out


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flatten(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def config_changes(config_yaml: str | Path, config_dict: dict[str, Any]) -> list[str]:
    """What differs between a run's ``config.yaml`` and ``config_dict``, one ``key: old -> new``
    per dotted key (``(unset)`` for a key only one side has), sorted by key."""
    old = _flatten(yaml.safe_load(Path(config_yaml).read_text()) or {})
    new = _flatten(yaml.safe_load(yaml.safe_dump(config_dict)) or {})
    missing = "(unset)"
    return [f"{k}: {old.get(k, missing)} -> {new.get(k, missing)}"
            for k in sorted(set(old) | set(new)) if old.get(k, missing) != new.get(k, missing)]
