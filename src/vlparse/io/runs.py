"""Run folders owned by one run at a time.

A training run writes its folder while holding an exclusive lock on ``RUN/.lock`` (``flock``;
the file records the holder's process id and host), so a second run on the same folder is refused
at its start instead of interleaving logs and deleting the first one's checkpoints. A new run is
refused in a folder that already holds something, unless it resumes (``--resume``) or replaces
(``--overwrite``: the old run is moved aside to ``RUN.replaced-<time>``, never deleted).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from vlparse.errors import RunFolderError, RunFolderInUseError

__all__ = [
    "LOCK_NAME",
    "RunLock",
    "open_run_folder",
    "replace_run_folder",
    "read_run_config",
    "run_task",
]

LOCK_NAME = ".lock"
CONFIG_NAME = "config.yaml"


class RunLock:
    """The exclusive lock of a run folder, held until :meth:`release` (or the end of a ``with``
    block, or the process). Take it with :meth:`acquire`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: str | Path) -> RunLock:
        """Lock ``folder`` (created if needed) or raise :class:`RunFolderInUseError` naming the
        process that holds it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderInUseError(
                f"{folder} is in use by another run (process {holder}); wait for it to end, or "
                "choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        return cls(folder, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (safe to call twice)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _contents(folder: Path) -> list[str]:
    """What a folder holds besides its lock file (empty when it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


def replace_run_folder(folder: str | Path) -> Path | None:
    """Move the run in ``folder`` aside to ``<folder>.replaced-<YYYYmmdd-HHMMSS>`` (beside it)
    and return where it went; ``None`` when there was nothing to move. Refused while another
    process holds the folder's lock."""
    folder = Path(folder)
    if not _contents(folder):
        return None
    with RunLock.acquire(folder):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = folder.with_name(f"{folder.name}.replaced-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
        os.rename(folder, target)
    return target


def open_run_folder(
    folder: str | Path, *, resume: bool = False, overwrite: bool = False, log=print
) -> RunLock:
    """Claim ``folder`` for a run and return its held lock.

    A folder that holds anything is refused unless ``resume`` (continue the run in it) or
    ``overwrite`` (move it aside first, see :func:`replace_run_folder`; ``log`` says where).

    Raises:
        RunFolderInUseError: another process holds the lock.
        RunFolderError: the folder holds a run and neither option was given, or is a file.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in the folder and --overwrite replaces "
                             "it; pass one of them")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a run folder")
    if overwrite:
        moved = replace_run_folder(folder)
        if moved is not None:
            log(f"--overwrite: moved the previous contents of {folder} to {moved}")
    lock = RunLock.acquire(folder)
    held = _contents(folder)
    if held and not resume:
        lock.release()
        shown = ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
        raise RunFolderError(
            f"{folder} already holds a run ({shown}); pass --resume to continue it, --overwrite "
            "to move it aside and start anew, or choose another --out"
        )
    return lock


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.yaml`` of a run folder as a dict (YAML only, no code)."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {CONFIG_NAME}: not a run folder")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RunFolderError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a mapping of config sections")
    return data


def run_task(run_dir: str | Path) -> str | None:
    """The fine-tuning task of a run folder (``task.name`` of its config), ``None`` for a
    pre-training run."""
    task = read_run_config(run_dir).get("task")
    if task is None:
        return None
    return str(task.get("name", "retrieval")) if isinstance(task, dict) else str(task)
