"""``kill -9`` while a checkpoint is being written loses nothing: the previous checkpoint stays
intact, ``--resume`` continues from it to the same weights as a run that was never killed, the
dead write's temporary folder is cleaned up, and the log holds each step once.

The old code was already crash-safe for the weights (atomic folder rename); it guards against
the old log: a resumed run appended to ``log.jsonl`` after the lines the killed run had written
beyond its checkpoint, so steps 3 and 4 appeared twice (and the loss plot mixed both).
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from vlparse.cli import main

# the process kills itself (SIGKILL) at the rename that would publish step 4's checkpoint:
# every file of it is written, nothing is in place yet
KILL_AT_STEP_4 = """
import os, signal, sys
real_replace = os.replace
def replace(src, dst, *a, **k):
    if os.path.basename(str(src)).startswith(".tmp-step_00000004"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)
os.replace = replace
from vlparse.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _latest_weights(run) -> dict[str, torch.Tensor]:
    name = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(run / "checkpoints" / name / "model.safetensors")


def test_kill_9_during_a_checkpoint_write(tmp_path, cli, pretrain_args, one_thread):
    run, straight = tmp_path / "run", tmp_path / "straight"
    extra = ["train.max_steps=6", "train.ckpt_every=2", "train.log_every=1"]
    killed = cli(*pretrain_args(run, *extra), code=KILL_AT_STEP_4)
    assert killed.returncode == -9, killed.stderr[-2000:]
    ckpts = run / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_00000002"
    assert not (ckpts / "step_00000004").exists()
    assert list(ckpts.glob(".tmp-step_00000004*")), "the killed write left no trace to clean"

    assert main(pretrain_args(run, *extra, "--resume")) == 0  # one thread, like the killed run
    assert main(pretrain_args(straight, *extra)) == 0
    a, b = _latest_weights(straight), _latest_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(ckpts.glob(".tmp-*"))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]
