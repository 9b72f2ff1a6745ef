"""Fixtures of the fault-injection tests: the command line in this process or in a fresh one,
and the arguments of a small pre-training run.

The subprocesses run the vlparse that this test process imported (its ``src`` folder goes first
on ``PYTHONPATH``), so the same tests can be pointed at another checkout of the code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import vlparse

SRC = str(Path(vlparse.__file__).resolve().parents[1])


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli(*args, env=..., timeout=...)``: ``python -m vlparse ARGS`` in a fresh process."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            code: str | None = None) -> subprocess.CompletedProcess:
        full = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env or {})}
        cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "vlparse",
                                                                 *args]
        return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def pretrain_args(scene_world, small_overrides) -> Callable[..., list[str]]:
    """``pretrain_args(out, *extra)``: a ``vlparse pretrain`` of the shrunk tiny model on the
    scene world's COCO images, without evaluation."""

    def args(out: Path, *extra: str) -> list[str]:
        return ["pretrain", "--config", "tiny", "--data", str(scene_world), "--out", str(out),
                "--no-eval", *small_overrides, "data.train_sets=[coco]", *extra]

    return args


def error_line(stderr: str) -> str:
    """The last line of ``stderr``, which must be the CLI's one-line error."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert "Traceback" not in stderr, stderr[-2000:]
    return lines[-1]


@pytest.fixture
def one_line_error() -> Callable[[str], str]:
    """``one_line_error(stderr)``: the CLI's ``vlparse: error: ...`` line (asserted)."""

    def check(stderr: str) -> str:
        line = error_line(stderr)
        assert line.startswith("vlparse: error: "), stderr[-2000:]
        return line

    return check


@pytest.fixture
def one_thread():
    """One intra-op thread in this process, as in the subprocesses (``OMP_NUM_THREADS=1``), so
    that runs of both are bit for bit comparable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
