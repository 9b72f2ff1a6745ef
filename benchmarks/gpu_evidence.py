"""The GPU evidence command: every GPU measurement of the project in one prepared run that fits a
short GPU window (9 minutes by default), written as at most 8 small files under OUTDIR.

Parts, in order (each a subprocess with its own time limit; a part that would not fit in the
time left is skipped and the record says so):
  checks      benchmarks/step_checks.py: the attention kernel each mask gets, and one training
              step under the CUDA sync debug mode          -> evidence.json ("checks")
  throughput  benchmarks/pretrain_throughput.py at ``paper`` size, vlparse and the stock assembly
              in the same run, bf16 and SDPA, not compiled   -> pretrain_throughput.json
  retrieval   benchmarks/retrieval_speed.py, vlparse and stock  -> retrieval_speed.json
  probe       benchmarks/probe_overhead.py                 -> probe_overhead.json
  smoke       benchmarks/gpu_smoke.sh: torchrun, 20 steps and a resume  -> gpu_smoke.json
  fiber       benchmarks/fiber_speed.py: fiber_base pre-training beside the paper model in the
              same run, and FIBER's two-stage retrieval (else "not available at this commit")
                                                           -> fiber_speed.json
  fp8         benchmarks/fp8_loss.py: FP8 against bf16 over 200 steps (needs torchao)
                                                           -> evidence.json ("fp8")
  compile     the throughput benchmark's compiled pair (stock compiled, vlparse's whole step
              compiled with static shapes): minutes of compilation each, so it rarely fits
              after the parts above; give it a window of its own (--parts compile,ablation)
                                                           -> evidence.json ("compile")
  ablation    the next missing unit of the Table 5 ablation (``vlparse ablate --max-units 1``
              against the committed units in reports/*-table5-ablation/units/), from random
              weights (``--base-config ablation_world_gpu``: nothing is downloaded)
                                                           -> units/<row>-seed<k>.json
plus evidence.json (every part's status, time and small results) and evidence.log (the output).

Usage (repository root, one GPU; ``bash benchmarks/gpu_carry.sh .whl`` first, here, and
carry ``.whl``: the torchao wheel and the bundled vocabulary that the GPU image lacks):
  bash benchmarks/gpu_evidence.sh OUTDIR --wheels .whl
  python benchmarks/gpu_evidence.py OUTDIR --wheels .whl --parts compile,ablation
  python benchmarks/gpu_evidence.py OUTDIR --parts ablation   # a window for ablation units
  python benchmarks/gpu_evidence.py OUTDIR --cpu-smoke        # every part shrunk, on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
PARTS = ("checks", "throughput", "retrieval", "probe", "smoke", "fiber", "fp8", "compile",
         "ablation")
LOG_TAIL_BYTES = 200_000

# the Table 5 experiment whose units accumulate, one per GPU window (its arguments are stored
# in every unit; changing them starts another experiment). The base config
# `ablation_world_gpu` starts every row from random weights (model.visual.pretrained and
# model.text.pretrained null, which no row overrides) at batch 256: the GPU machine has no
# network, so neither timm's ImageNet weights nor bert-base-uncased can be fetched there.
ABLATION = ["--base-config", "ablation_world_gpu", "--seeds", "3", "--pretrain-steps", "200",
            "--finetune-steps", "100", "--probe-samples", "300",
            "--finetune-config", "vqa_world_gpu", "--no-progress",
            "model.visual.drop_path_rate=0.0", "objectives.itm_negatives=batch",
            "optim.lr=1e-4", "optim.visual_lr=1e-4", "optim.warmup_steps=20",
            "optim.decay_epochs=[]", "train.precision=bf16", "train.log_every=25",
            "train.ckpt_every=0", "train.progress=false", "train.eval_images=200",
            "data.num_workers=12", "finetune.data.num_workers=12"]
WORLD = ["--images", "8000", "--image-size", "256", "--workers", "14", "--seed", "0"]
SMOKE_ABLATION = ["--tiny", "--rows", "patch", "--seeds", "1", "--pretrain-steps", "2",
                  "--finetune-steps", "1", "--probe-samples", "4", "--no-progress",
                  "model.visual.image_size=64", "model.visual.window_size=4",
                  "model.text.num_layers=2", "train.batch_size=4", "train.eval_images=4",
                  "data.num_workers=0", "finetune.train.batch_size=4",
                  "finetune.task.eval_max_images=4"]


@dataclass
class Run:
    """One evidence run: where it writes, its clock and its record."""

    out: Path
    smoke: bool
    deadline: float
    log: Path
    scratch: Path
    record: dict = field(default_factory=dict)
    site: str | None = None  # a carried folder of packages the GPU image lacks, on PYTHONPATH

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        (self.out / "evidence.json").write_text(json.dumps(self.record, indent=1) + "\n")


def _python(script: str, *args: str) -> list[str]:
    return [sys.executable, str(BENCH / script), *args]


def _vlparse(*args: str) -> list[str]:
    return [sys.executable, "-m", "vlparse", *args]


def run_part(run: Run, name: str, commands: list[list[str]], need_s: float, limit_s: float,
             env: dict | None = None) -> bool:
    """Run ``commands`` one after the other within ``limit_s`` (and the time left); record
    ``ok``, ``failed``, ``timed out`` or ``skipped`` with the seconds taken."""
    entry = run.record["parts"].setdefault(name, {})
    if run.left() < need_s:
        entry.update(status="skipped", reason=f"needs about {need_s:.0f} s, "
                     f"{max(run.left(), 0):.0f} s left")
        run.save()
        return False
    t0 = time.monotonic()
    entry["commands"] = [_redact(run, cmd) for cmd in commands]
    status = "ok"
    for cmd in commands:
        left = min(limit_s - (time.monotonic() - t0), run.left())
        status = _call(run, cmd, max(left, 1.0), env)
        if status != "ok":
            break
    entry.update(status=status, seconds=round(time.monotonic() - t0, 1))
    _redact_files(run)
    run.save()
    return status == "ok"


def _call(run: Run, cmd: list[str], timeout: float, env: dict | None) -> str:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), run.site, full_env.get("PYTHONPATH")) if p)
    with run.log.open("a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                process_group=0)  # its own group: killed whole
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return "timed out"
    return "ok" if rc == 0 else f"failed (exit {rc})"


def _stop(proc: subprocess.Popen) -> None:
    """End a part that ran out of time: SIGTERM to its process group first (torchrun passes it on
    to the workers it started), SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _redact(run: Run, cmd: list[str]) -> str:
    """A command as the record shows it: no path of this machine (the repository is ``.``, the
    output folder ``OUTDIR``, the scratch folder ``SCRATCH``)."""
    words = ["python" if cmd[0] == sys.executable else cmd[0], *cmd[1:]]
    return _redact_text(run, " ".join(words))


def _redact_text(run: Run, text: str) -> str:
    for path, name in ((run.scratch, "SCRATCH"), (run.out, "OUTDIR"), (REPO, ".")):
        text = text.replace(str(path.resolve()), name).replace(str(path), name)
    return text


def _redact_files(run: Run) -> None:
    """The same for the JSON files the parts wrote (their recorded commands name the folders
    they were given), so that they can be committed as they are."""
    for path in run.out.rglob("*.json"):
        text = path.read_text()
        clean = _redact_text(run, text)
        if clean != text:
            path.write_text(clean)


# ----------------------------------------------------------------------------- the parts


def committed_units() -> Path | None:
    """The newest committed folder of Table 5 units (``reports/*-table5-ablation/units``)."""
    found = sorted(REPO.glob("reports/*-table5-ablation/units"))
    return found[-1] if found else None


def unit_estimate_s(units: Path | None, default: float) -> float:
    """Seconds a unit needs: the slowest committed unit plus start-up, else ``default``."""
    walls = [json.loads(p.read_text())["results"]["unit"].get("wall_s") or 0.0
             for p in (units.glob("*.json") if units else [])]
    return max(walls) + 60.0 if walls else default


def parts(run: Run, wheels: str | None) -> dict[str, tuple[list[list[str]], float, float, dict]]:
    """``{part: (commands, seconds needed to start it, its time limit, extra environment)}``."""
    out, tmp, smoke = run.out, run.scratch, run.smoke
    cpu = ["--device", "cpu"] if smoke else []
    throughput = (["--config", "tiny", "--batch-size", "2", "--steps", "1", "--warmup", "1",
                   "--variants", "stock-fp32,vlparse-fp32,vlparse-fp32-static", *cpu]
                  if smoke else
                  ["--config", "paper", "--batch-size", "64", "--steps", "8", "--warmup", "3",
                   "--variants", "stock-bf16-sdpa,vlparse-bf16"])
    # compiling the paper-size step takes minutes per variant on the GPU machine's CPUs (the
    # stock one alone took over 170 s on the H200 machine), so the compiled pair is its own part
    compiled = (["--config", "tiny", "--batch-size", "2", "--steps", "1", "--warmup", "1",
                 "--variants", "stock-fp32,vlparse-fp32-static", *cpu] if smoke else
                ["--config", "paper", "--batch-size", "64", "--steps", "8", "--warmup", "3",
                 "--variants", "stock-bf16-compile,vlparse-bf16-static-compile"])
    retrieval = (["--config", "tiny", "--images", "4", "--naive-pairs", "8", "--batch-pairs",
                  "64", *cpu] if smoke else
                 ["--config", "paper", "--images", "100", "--batch-pairs", "4096",
                  "--naive-pairs", "256"])
    probe = (["--config", "tiny", "--num-samples", "16", "--batch-size", "8", "--warmup", "0",
              *cpu] if smoke else ["--config", "paper", "--num-samples", "2000",
                                   "--batch-size", "64"])
    smoke_env = ({"SMOKE_DEVICE": "cpu", "STEPS": "2", "MORE": "1", "IMAGES": "40",
                  "WORKERS": "1"} if smoke else {})
    fp8 = (["--config", "tiny", "--steps", "0", *cpu]  # FP8 is emulated, slowly, on a CPU
           if smoke else ["--config", "ablation", "--steps", "200", "--batch-size", "32"])
    return {
        "checks": ([_python("step_checks.py", "--config", "tiny" if smoke else "paper", *cpu,
                            "--out", str(tmp / "checks.json"))], 20, 60, {}),
        "throughput": ([_python("pretrain_throughput.py", *throughput, "--out",
                                str(out / "pretrain_throughput.json"))], 40, 120, {}),
        "compile": ([_python("pretrain_throughput.py", *compiled, "--out",
                             str(tmp / "compiled.json"))], 300, 480, {}),
        "retrieval": ([_python("retrieval_speed.py", *retrieval, "--out",
                               str(out / "retrieval_speed.json"))], 30, 60, {}),
        "probe": ([_python("probe_overhead.py", *probe, "--out",
                           str(out / "probe_overhead.json"))], 20, 45, {}),
        "smoke": ([["bash", str(BENCH / "gpu_smoke.sh")]], 60, 120,
                  {"OUT": str(out), "WORK": str(tmp / "smoke"), "PYTHON": sys.executable,
                   **smoke_env}),
        "fiber": ([_python("fiber_speed.py", "--config", "tiny" if smoke else "base", *cpu,
                           "--out", str(out / "fiber_speed.json"))], 60, 90, {}),
        "ablation": (_ablation_commands(run), unit_estimate_s(
            committed_units(), 60.0 if smoke else 170.0), 400, {}),
        "fp8": ([_python("fp8_loss.py", *fp8, *(["--wheels", wheels] if wheels else []),
                         "--out", str(tmp / "fp8.json"))], 20 if smoke else 90, 120, {}),
    }


def _ablation_commands(run: Run) -> list[list[str]]:
    world = run.scratch / "world"
    synth = ["--images", "40", "--image-size", "64", "--workers", "1"] if run.smoke else WORLD
    units = [] if run.smoke or committed_units() is None else ["--units",
                                                               str(committed_units())]
    ablate = ["ablate", "--data", str(world / "manifest.json"), "--out",
              str(run.scratch / "ablation"), *units, "--units-out", str(run.out / "units"),
              "--max-units", "1", *(SMOKE_ABLATION if run.smoke else ABLATION)]
    return [_vlparse("data", "synth", "--out", str(world), *synth), _vlparse(*ablate)]


def fiber_status() -> str | None:
    """``None`` when the FIBER benchmarks can run, else why not."""
    from vlparse.models.fiber.modeling import FiberModel

    if not hasattr(FiberModel, "forward_pretrain"):
        return "not available at this commit: the FIBER model has no forward_pretrain yet"
    if not (BENCH / "fiber_speed.py").is_file():
        return "FIBER has forward_pretrain, but benchmarks/fiber_speed.py is not written yet"
    return None


def _environment(smoke: bool) -> dict:
    import platform

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "mode": "cpu smoke" if smoke else "gpu"}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True)
    env["commit"] = commit.stdout.strip() or None
    return env


def _embed(run: Run, part: str, name: str) -> None:
    path = run.scratch / name
    if path.is_file():
        run.record["parts"][part]["result"] = json.loads(path.read_text())


def _final_record(run: Run, argv: list[str] | None) -> None:
    """``evidence.json`` in the shape of ``reports/results.schema.json`` (commit, hardware, date,
    the command; the parts under ``results``), written once every part is done."""
    import torch

    sys.path.insert(0, str(BENCH))
    from results_file import write_results

    device = "cuda" if torch.cuda.is_available() and not run.smoke else "cpu"
    record = write_results(None, script=__file__, topic="gpu-evidence", device=device,
                           results=run.record, argv=sys.argv[1:] if argv is None else argv,
                           question="Where do the speed goals stand on this GPU, measured in one "
                           "short window, and what is the next Table 5 unit?")
    text = _redact_text(run, json.dumps(record, indent=1))
    (run.out / "evidence.json").write_text(text + "\n")


def _tail_log(path: Path) -> None:
    data = path.read_bytes()
    if len(data) > LOG_TAIL_BYTES:
        path.write_bytes(b"[... earlier output cut ...]\n" + data[-LOG_TAIL_BYTES:])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", help="where the (at most 8) files go")
    ap.add_argument("--budget-s", type=float, default=540.0, help="the whole run's time")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {PARTS}")
    ap.add_argument("--cpu-smoke", action="store_true", help="every part shrunk, on the CPU")
    ap.add_argument("--wheels", default=None, help="the folder benchmarks/gpu_carry.sh fills: "
                    "a torchao wheel (FP8 part) and, in site/, the bundled vocabulary")
    ap.add_argument("--scratch", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    chosen = args.parts.split(",")
    if set(chosen) - set(PARTS):
        ap.error(f"unknown parts {sorted(set(chosen) - set(PARTS))}; choose from {PARTS}")
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="vlparse-evidence-"))
    run = Run(out, args.cpu_smoke, time.monotonic() + args.budget_s, out / "evidence.log",
              scratch)
    run.log.write_text("")
    run.record = {"environment": _environment(args.cpu_smoke), "budget_s": args.budget_s,
                  "parts": {}}
    if args.wheels and (Path(args.wheels) / "site").is_dir():
        run.site = str((Path(args.wheels) / "site").resolve())
    plan = parts(run, args.wheels)
    for name in chosen:
        if name == "fiber" and (why := fiber_status()) is not None:
            run.record["parts"]["fiber"] = {"status": "not available", "reason": why}
            continue
        commands, need, limit, env = plan[name]
        run_part(run, name, commands, need, limit, env)
    for part, name in (("checks", "checks.json"), ("fp8", "fp8.json"),
                       ("compile", "compiled.json")):
        if part in chosen:
            _embed(run, part, name)
    run.record["seconds"] = round(args.budget_s - run.left(), 1)
    _final_record(run, argv)
    _tail_log(run.log)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    print(json.dumps({k: v.get("status") for k, v in run.record["parts"].items()}, indent=1))
    print(f"{len(files)} files in {out}: {', '.join(files)}")
    return run.record


if __name__ == "__main__":
    main(sys.argv[1:])
