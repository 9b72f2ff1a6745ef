"""Files of vlparse runs: atomic writes with the umask's permissions (:mod:`~vlparse.io.files`),
checkpoints read without unpickling (:mod:`~vlparse.io.checkpoint`, :mod:`~vlparse.io.state`)
and run folders owned by one run at a time (:mod:`~vlparse.io.runs`).

A low layer: it imports nothing of vlparse but :mod:`vlparse.errors`.
"""

from vlparse.io.checkpoint import (
    Checkpoint,
    convert_legacy_checkpoint,
    find_checkpoint,
    list_checkpoints,
    read_checkpoint,
    save_checkpoint,
)
from vlparse.io.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from vlparse.io.runs import RunLock, open_run_folder, read_run_config, replace_run_folder, run_task

__all__ = [
    "Checkpoint",
    "RunLock",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "convert_legacy_checkpoint",
    "find_checkpoint",
    "list_checkpoints",
    "open_run_folder",
    "read_checkpoint",
    "read_run_config",
    "replace_run_folder",
    "run_task",
    "save_checkpoint",
]
