"""Checkpoint round trips, atomicity, pruning, path resolution, tied weights, the pickle-free
state format, damaged files and the old format."""

from __future__ import annotations

import random

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from vlparse.config import OptimConfig
from vlparse.errors import CheckpointError
from vlparse.train import checkpoint as ck
from vlparse.train.optim import build_optimizer, build_scheduler


class TiedLM(nn.Module):
    """Embedding whose weight is shared with the output decoder, plus a buffer."""

    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.embed.weight
        self.register_buffer("scale", torch.ones(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.tanh(self.hidden(self.embed(ids)))) * self.scale


def _setup(seed: int):
    torch.manual_seed(seed)
    model = TiedLM()
    cfg = OptimConfig(warmup_steps=2, decay_epochs=[1])
    groups = [{"params": list(model.parameters()), "lr": 1e-2, "weight_decay": 0.01}]
    opt = build_optimizer(groups, cfg)
    return model, opt, build_scheduler(opt, cfg, steps_per_epoch=3)


def _train(model, opt, sched, steps: int) -> None:
    ids = torch.arange(8) % 11
    for _ in range(steps):
        loss = model(ids).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _save(tmp_path, step, model, opt, sched, keep=3):
    return ck.save_checkpoint(tmp_path, step, model, opt, sched, {"epoch": 1, "k": [1, 2]}, keep)


def test_round_trip_restores_model_optimizer_scheduler_rng(tmp_path):
    model, opt, sched = _setup(0)
    _train(model, opt, sched, 4)
    path = _save(tmp_path, 4, model, opt, sched)
    assert path == tmp_path / "checkpoints" / "step_00000004"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    expected = (torch.rand(5), random.random(), np.random.rand())

    model2, opt2, sched2 = _setup(1)
    assert not torch.equal(model2.hidden.weight, model.hidden.weight)
    extra = ck.load_checkpoint(tmp_path, model2, opt2, sched2)
    assert extra == {"epoch": 1, "k": [1, 2], "step": 4}
    sd, sd2 = model.state_dict(), model2.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    assert model2.decoder.weight is model2.embed.weight  # tie survives loading
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid, st in s1["state"].items():
        for name, value in st.items():
            assert torch.equal(value, s2["state"][pid][name]), (pid, name)
    assert sched2.last_epoch == sched.last_epoch == 4
    assert sched2.get_last_lr() == sched.get_last_lr()
    # the RNG was restored to its state at save time
    assert torch.equal(torch.rand(5), expected[0])
    assert random.random() == expected[1]
    assert np.random.rand() == expected[2]
    # training continues identically
    _train(model, opt, sched, 2)
    _train(model2, opt2, sched2, 2)
    assert torch.equal(model.hidden.weight, model2.hidden.weight)


def test_tied_weights_stored_once_and_reloaded(tmp_path):
    model, opt, sched = _setup(0)
    path = _save(tmp_path, 0, model, opt, sched)
    keys = safetensors.torch.load_file(path / "model.safetensors").keys()
    assert ("embed.weight" in keys) != ("decoder.weight" in keys)
    fresh = TiedLM()
    ck.load_checkpoint(path, fresh, restore_rng=False)
    assert torch.equal(fresh.decoder.weight, model.embed.weight)
    assert fresh.decoder.weight is fresh.embed.weight


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _setup(0)
    first = _save(tmp_path, 1, model, opt, sched)
    before = (first / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)  # the state file
    _train(model, opt, sched, 1)
    with pytest.raises(OSError, match="simulated"):
        _save(tmp_path, 2, model, opt, sched)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001"]
    assert (root / "latest").read_text().strip() == "step_00000001"
    assert (first / "model.safetensors").read_bytes() == before
    assert ck.find_checkpoint(tmp_path) == first


def test_pruning_keeps_newest(tmp_path):
    model, opt, sched = _setup(0)
    for step in (5, 10, 15, 20):
        _save(tmp_path, step, model, opt, sched, keep=2)
    root = tmp_path / "checkpoints"
    assert [p.name for p in ck.list_checkpoints(root)] == ["step_00000015", "step_00000020"]
    for step in (25, 30):
        _save(tmp_path, step, model, opt, sched, keep=0)
    assert len(ck.list_checkpoints(root)) == 4
    # re-saving an older step keeps it (it is the one just written) and points latest at it
    _save(tmp_path, 15, model, opt, sched, keep=1)
    assert [p.name for p in ck.list_checkpoints(root)] == ["step_00000015"]
    assert ck.find_checkpoint(tmp_path).name == "step_00000015"


def test_find_checkpoint_path_forms_and_errors(tmp_path):
    model, opt, sched = _setup(0)
    _save(tmp_path, 3, model, opt, sched)
    step7 = _save(tmp_path, 7, model, opt, sched)
    root = tmp_path / "checkpoints"
    assert ck.find_checkpoint(tmp_path) == step7
    assert ck.find_checkpoint(root) == step7
    assert ck.find_checkpoint(root / "step_00000003") == root / "step_00000003"
    assert ck.find_checkpoint(step7 / "model.safetensors") == step7
    (root / "latest").write_text("step_00000003\n")
    assert ck.find_checkpoint(tmp_path).name == "step_00000003"
    (root / "latest").write_text("step_99999999\n")
    with pytest.warns(UserWarning, match="missing or incomplete"):
        assert ck.find_checkpoint(tmp_path) == step7

    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "checkpoints" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="notes.txt"):
        ck.find_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.find_checkpoint(tmp_path / "nowhere")


def test_strict_load_names_keys_and_non_strict_reports(tmp_path):
    model, opt, sched = _setup(0)
    path = _save(tmp_path, 0, model, opt, sched)

    class Other(TiedLM):
        def __init__(self) -> None:
            super().__init__()
            self.extra_head = nn.Linear(6, 2)
            del self.hidden
            self.hidden = nn.Identity()

    with pytest.raises(CheckpointError, match=r"extra_head\.weight.*hidden\.weight"):
        ck.load_checkpoint(path, Other())
    report = ck.load_model_weights(tmp_path, Other())
    assert report.missing == ["extra_head.bias", "extra_head.weight"]
    assert report.unexpected == ["hidden.bias", "hidden.weight"]

    bigger = TiedLM(vocab=13)
    report = ck.load_model_weights(path / "model.safetensors", bigger)
    assert "embed.weight" in report.missing and report.notes
    assert torch.equal(bigger.hidden.weight, model.hidden.weight)


def test_wrappers_are_unwrapped(tmp_path):
    model, opt, sched = _setup(0)

    class Wrapper(nn.Module):  # stands in for torch.compile's OptimizedModule
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner

    path = ck.save_checkpoint(tmp_path, 1, Wrapper(model), None, None, {})
    keys = safetensors.torch.load_file(path / "model.safetensors").keys()
    assert not any(k.startswith("_orig_mod") for k in keys)
    fresh = TiedLM()
    ck.load_checkpoint(path, Wrapper(fresh), restore_rng=False)
    assert torch.equal(fresh.hidden.weight, model.hidden.weight)
    # a foreign file whose keys all carry "module." loads after stripping it
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items() if k != "decoder.weight"}
    torch.save(prefixed, tmp_path / "ddp.pt")
    assert ck.load_model_weights(tmp_path / "ddp.pt", TiedLM()).missing == []


def test_state_encoding_round_trips_what_json_alone_would_lose():
    from vlparse.io.state import StateFormatError, decode, encode, pack, unpack

    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(4.0)}},
        "param_groups": [{"betas": (0.9, 0.999), "params": [0, 1], "lr": 1e-3}],
        "rng": (3, tuple(range(5)), None),
        "numpy": ("MT19937", np.arange(6, dtype=np.uint32), 2, 0, 0.0),
        "odd": float("nan"),
        "__tensor__": "a key that looks like a tag",
    }
    tensors: dict = {}
    tree = encode(state, tensors)
    import json

    back = decode(json.loads(json.dumps(tree)), tensors)  # survives a trip through JSON
    assert list(back["state"]) == [0]
    assert torch.equal(back["state"][0]["exp_avg"], torch.arange(4.0))
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["rng"] == (3, (0, 1, 2, 3, 4), None)
    assert back["numpy"][1].dtype == np.uint32 and back["numpy"][1].tolist() == list(range(6))
    assert back["odd"] != back["odd"]  # nan
    assert back["__tensor__"] == "a key that looks like a tag"
    assert unpack(pack(state))["param_groups"] == back["param_groups"]
    with pytest.raises(StateFormatError, match=r"state\.bad: a TiedLM"):
        encode({"bad": TiedLM()}, {})


def test_damaged_files_are_named_and_resume_falls_back(tmp_path):
    model, opt, sched = _setup(0)
    for step in (1, 2, 3):
        _save(tmp_path, step, model, opt, sched)
    root = tmp_path / "checkpoints"
    weights = root / "step_00000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated
    with pytest.raises(CheckpointError, match=str(weights)):
        ck.load_checkpoint(root / "step_00000003", TiedLM())
    (root / "step_00000002" / "state.json").write_text('{"format": "vlparse-checkp')
    warned = []
    found = ck.read_resumable(tmp_path, warned.append)
    assert found.path == root / "step_00000001"
    assert "step_00000003/model.safetensors" in warned[0]
    assert "step_00000002/state.json" in warned[0] and "resuming from step_00000001" in warned[0]
    (root / "step_00000001" / "state.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        ck.read_resumable(tmp_path, warned.append)
    assert ck.read_resumable(tmp_path / "fresh", warned.append) is None


class _Payload:
    """Unpickling this creates a file: the trace of code run from a checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_old_format_is_refused_unless_converted(tmp_path):
    from vlparse.errors import LegacyCheckpointError
    from vlparse.io.checkpoint import convert_legacy_checkpoint

    model, opt, sched = _setup(0)
    _train(model, opt, sched, 2)
    folder = _save(tmp_path, 2, model, opt, sched)
    for name in ("state.json", "state.safetensors"):
        (folder / name).unlink()
    marker = tmp_path / "ran"
    legacy = {"format_version": 1, "step": 2, "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict(), "rng": ck.capture_rng_state(),
              "extra_state": {"epoch": 0}, "payload": _Payload(str(marker))}
    torch.save(legacy, folder / "state.pt")
    with pytest.raises(LegacyCheckpointError, match="convert-checkpoint .* --trust"):
        ck.load_checkpoint(tmp_path, TiedLM(), *_setup(1)[1:])
    assert not marker.exists()
    # weights alone are safetensors: fine-tuning may start from an old run
    assert ck.load_model_weights(tmp_path, TiedLM()).missing == []
    assert convert_legacy_checkpoint(tmp_path) == [folder]
    assert marker.exists()  # converting unpickles: for trusted files only
    assert not (folder / "state.pt").exists()
    model2, opt2, sched2 = _setup(1)
    assert ck.load_checkpoint(tmp_path, model2, opt2, sched2) == {"epoch": 0, "step": 2}
    assert sched2.last_epoch == 2 and torch.equal(model2.hidden.weight, model.hidden.weight)


def test_only_dead_processes_temporary_folders_are_removed(tmp_path):
    import socket
    import subprocess
    import sys

    model, opt, sched = _setup(0)
    root = tmp_path / "checkpoints"
    host = socket.gethostname()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead = int(done.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = root / f".tmp-step_00000009-{dead}@{host}"
        busy = root / f".tmp-step_00000009-{live.pid}@{host}"
        remote = root / f".tmp-step_00000009-{dead}@another-host"
        for p in (stale, busy, remote):
            p.mkdir(parents=True)
        _save(tmp_path, 1, model, opt, sched)
        assert not stale.exists()
        assert busy.exists() and remote.exists()
    finally:
        live.kill()
        live.wait()


def test_files_get_the_umask_permissions(tmp_path):
    import os
    import stat

    from vlparse.io.files import atomic_write_text

    old = os.umask(0o022)
    try:
        model, opt, sched = _setup(0)
        folder = _save(tmp_path, 1, model, opt, sched)
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "state.json", "latest", "config.yaml"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
