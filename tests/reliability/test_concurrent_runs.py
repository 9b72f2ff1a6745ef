"""Two runs on one folder: the second is refused at its start (with ``--resume`` or
``--overwrite`` too) while the first holds the folder, and the first runs on untouched.

Guards against the old behaviour: both runs wrote into the folder at once, their lines
interleaved in ``log.jsonl``, and each deleted the other's in-flight checkpoint (every
``.tmp-*`` folder was removed on save), killing it with ``[Errno 2] ... .tmp-step_...``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import vlparse
from vlparse.cli import main

SRC = str(Path(vlparse.__file__).resolve().parents[1])  # the code under test


def _wait_for_log(path, proc, timeout=300.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file() and path.read_text().strip():
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    raise AssertionError(f"no {path} after {timeout} s")


def test_a_second_run_on_a_busy_folder_is_refused(tmp_path, pretrain_args, capsys,
                                                  one_line_error):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "vlparse", *pretrain_args(run, "train.max_steps=100000",
                                                         "train.log_every=1")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_log(run / "log.jsonl", first)
        for extra in ((), ("--resume",), ("--overwrite",)):
            capsys.readouterr()
            assert main(pretrain_args(run, "train.max_steps=3", *extra)) == 2
            assert "in use by another run" in one_line_error(capsys.readouterr().err)
        assert first.poll() is None  # the first run goes on
        time.sleep(1.0)
    finally:
        first.kill()
        first.wait()
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
             if line.strip()]
    assert steps == list(range(1, len(steps) + 1))
    assert not list(tmp_path.glob("run.replaced-*"))
