"""What several commands share: sub-parsers with examples, ``key=value`` overrides, the
options of a training run, and loading ``--config``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["add_command", "add_overrides", "add_manifest", "add_training_run", "load_cli_config",
           "is_main_process", "claim_out"]


def add_command(sub: argparse._SubParsersAction, name: str, help: str, examples: str,
                **kwargs: Any) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with ``examples``."""
    return sub.add_parser(name, help=help, epilog=examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.batch_size=32 objectives.mfr_mode=random")


def add_manifest(p: argparse.ArgumentParser) -> None:
    """``--data``: the manifest every data-reading command takes."""
    p.add_argument("--data", required=True, help="manifest.json naming the data files")


def add_training_run(p: argparse.ArgumentParser, eval_help: str) -> None:
    """``--out``, ``--resume``, ``--overwrite``, ``--no-eval`` and the overrides of a training
    command."""
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, model, summary)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run's newest intact checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="--out holds an earlier run: move it aside to OUT.replaced-<time> and "
                   "start anew (without this, a folder that holds a run is refused)")
    p.add_argument("--no-eval", action="store_true", help=eval_help)
    add_overrides(p)


def _builtin_path(name: str, finetune: bool) -> str | None:
    """The shipped YAML file of a built-in config or recipe ``name``, else ``None``."""
    from importlib import resources

    from vlparse.config import builtin_configs, builtin_recipes

    root = resources.files("vlparse") / "configs"
    if finetune and name in builtin_recipes():
        return str(root / "finetune" / f"{name}.yaml")
    if name in builtin_configs():
        return str(root / f"{name}.yaml")
    return None


def load_cli_config(name: str, overrides: list[str] | None, finetune: bool = False) -> Any:
    """``--config NAME`` with its overrides. A folder named like a built-in config (say
    ``./tiny``) is not a config file: the built-in one is meant."""
    from vlparse.config import FinetuneConfig, PretrainConfig, load_config
    from vlparse.errors import ConfigError

    if Path(name).is_dir():
        shipped = _builtin_path(name, finetune)
        if shipped is None:
            raise ConfigError(f"--config {name}: a folder, not a YAML file or a built-in name")
        name = shipped
    return load_config(name, overrides, cls=FinetuneConfig if finetune else PretrainConfig)


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` launch, or a process on its own."""
    try:
        return int(os.environ.get("RANK", "0") or 0) == 0
    except ValueError:
        return True


def claim_out(args: argparse.Namespace) -> None:
    """Check ``--out`` before any work (the trainer claims it for good when it starts): refused
    while another run holds it, or when it holds a run and neither ``--resume`` nor
    ``--overwrite`` was given; ``--overwrite`` moves the old run aside."""
    from vlparse.io.runs import open_run_folder

    if is_main_process():
        open_run_folder(args.out, resume=args.resume, overwrite=args.overwrite).release()
