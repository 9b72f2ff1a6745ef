"""``vlparse ablate``: the paper's Table 5 (section 4.3) on the user's data.

Each row of :data:`ROWS` is a visual embedder plus pre-training objectives, written as ``key=value``
overrides of one base config (``ablation``: the paper's setting, 224x224 images, a 3-layer multi-
modal Transformer, ImageNet and BERT initialisation; ``ablation_world_gpu``: the same model from
random weights at one GPU's batch, for a scene world). Every row gets the same data, seeds and step
budgets. For each row and seed the runner pre-trains (``train.seed`` = the seed) into
``OUT/runs/<row>/seed<k>/pretrain``, fine-tunes the task (VQA by default) from it into
``.../<task>``, probes the pre-trained model's Inter-Modality Flow ``F^{1,L}`` (``L`` = the multi-
modal layers: the paper's ``F^{1,3}``) on held-out pairs, and writes the unit's ``summary.json``.
The report (``table5.md``, ``table5.json``, ``table5.png``; written by
:mod:`vlparse.tasks.ablation_report`) gives mean +- sample std (``ddof=1``) over the seeds.

Resume: a unit with ``summary.json`` is skipped; a stage with a checkpoint resumes from it (the
newest intact one; an old-format pickle checkpoint is refused, never loaded); a stage folder
without one starts over. The ablation folder is locked while a run works in it, so a second
``vlparse ablate`` on the same ``--out`` is refused instead of deleting the first one's stages.
The arguments that define the experiment are stored in ``OUT/ablation.json``; a re-run with
other values fails (:class:`~vlparse.errors.AblationMismatchError`).
Rows and seeds are not part of that check: a later run may add seeds or rows to the experiment.

Overrides: ``key=value`` changes the pre-training config of every row; ``finetune.key=value``
changes the fine-tuning recipe. ``tiny=True`` swaps the rows' large parts for CPU-sized ones
(ResNet-10t / ResNet-18 for R50 / R101, 16-px patches) and defaults the base config to ``tiny``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from vlparse.config import FinetuneConfig, PretrainConfig, load_config, to_dict
from vlparse.errors import AblationMismatchError, ConfigError
from vlparse.io.files import atomic_write_json
from vlparse.io.runs import RunLock, replace_run_folder
from vlparse.tasks.ablation_report import summarize, write_report
from vlparse.tasks.ablation_units import read_unit, write_unit

__all__ = [
    "ROWS",
    "HEADLINE_METRICS",
    "AblationRow",
    "AblationMismatchError",
    "get_rows",
    "row_config",
    "summarize",
    "run_ablation",
    "write_report",
]

FT_PREFIX = "finetune."


class PaperNumbers(NamedTuple):
    """A row of the paper's Table 5 (FLOPs as GMACs, ``F^{1,3}``, VQA v2 test-dev/-std in %)."""

    flops_g: float
    params_m: float
    f13: float
    vqa_dev: float
    vqa_std: float


@dataclasses.dataclass(frozen=True)
class AblationRow:
    """One row: ``overrides`` of the base config; ``tiny_overrides`` are added in tiny mode."""

    name: str
    backbone: str
    objectives: str
    overrides: tuple[str, ...]
    tiny_overrides: tuple[str, ...] = ()
    paper: PaperNumbers | None = None

    @property
    def label(self) -> str:
        return f"{self.backbone} ({self.objectives})"


_RESNET = ("model.visual.kind=resnet", "model.visual.drop_path_rate=0.0", "objectives.mfr_mode=off")
ROWS: tuple[AblationRow, ...] = (
    AblationRow("r50", "R50", "MLM+ITM", (*_RESNET, "model.visual.arch=resnet50"),
                ("model.visual.arch=resnet10t",), PaperNumbers(4.1, 25.6, 0.437, 64.65, 65.12)),
    AblationRow("r101", "R101", "MLM+ITM", (*_RESNET, "model.visual.arch=resnet101"),
                ("model.visual.arch=resnet18",), PaperNumbers(7.8, 44.5, 0.441, 65.44, 65.71)),
    AblationRow("swin_nomfr", "Swin-T", "MLM+ITM, w/o MFR", ("objectives.mfr_mode=off",),
                (), PaperNumbers(4.5, 28.0, 0.461, 67.13, 67.40)),
    AblationRow("swin_randmfr", "Swin-T", "MLM+ITM+Rand MFR", ("objectives.mfr_mode=random",),
                (), PaperNumbers(4.5, 28.0, 0.463, 67.24, 67.41)),
    AblationRow("swin_mfr", "Swin-T", "MLM+ITM+MFR", ("objectives.mfr_mode=attention",),
                (), PaperNumbers(4.5, 28.0, 0.474, 67.74, 67.90)),
    AblationRow("patch", "Patch proj.", "MLM+ITM",
                ("model.visual.kind=patch", "model.visual.patch_size=32",
                 "model.visual.embed_dim=768", "model.visual.drop_path_rate=0.0",
                 "model.visual.pretrained=null", "objectives.mfr_mode=off"),
                ("model.visual.patch_size=16", "model.visual.embed_dim=128")),
)
"""Table 5's five rows plus the ViLT-style patch projection (not in the paper)."""

HEADLINE_METRICS: dict[str, str] = {
    "vqa": "vqa_score", "retrieval": "tr_r1", "nlvr2": "accuracy", "snli-ve": "accuracy",
}
"""Task -> the key of its validation metrics reported in the table (fractions in [0, 1])."""

def get_rows(names: Sequence[str] | None = None) -> list[AblationRow]:
    """The rows called ``names`` (all of :data:`ROWS` when ``None``), in the given order."""
    by_name = {r.name: r for r in ROWS}
    if names is None:
        return list(ROWS)
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise ConfigError(f"--rows: unknown row(s) {unknown or names}; choose from "
                          f"{', '.join(by_name)} (comma-separated)")
    return [by_name[n] for n in names]


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    pre = [o for o in overrides if not o.startswith(FT_PREFIX)]
    ft = [o[len(FT_PREFIX):] for o in overrides if o.startswith(FT_PREFIX)]
    return pre, ft


def _keys(overrides: Sequence[str]) -> set[str]:
    return {o.partition("=")[0].strip() for o in overrides}


def _cap_warmup(cfg: Any, steps: int, user: Sequence[str]) -> Any:
    """Warm-up at most 10 % of a short budget, unless ``optim.warmup_steps`` was given."""
    if "optim.warmup_steps" in _keys(user) or cfg.optim.warmup_steps <= max(1, steps // 10):
        return cfg
    optim = dataclasses.replace(cfg.optim, warmup_steps=max(1, steps // 10))
    return dataclasses.replace(cfg, optim=optim)


def row_overrides(row: AblationRow, seed: int, steps: int, overrides: Sequence[str],
                  tiny: bool) -> list[str]:
    """The ``key=value`` list of the pre-training config of ``row`` and ``seed``."""
    return [*row.overrides, *(row.tiny_overrides if tiny else ()), *overrides,
            f"train.seed={seed}", f"train.max_steps={steps}"]


def _ft_config(base: FinetuneConfig, seed: int, steps: int, overrides: Sequence[str],
               progress: bool = True) -> FinetuneConfig:
    """The fine-tuning recipe of one seed: ``train.seed``, ``train.max_steps``, warm-up cap."""
    train = dataclasses.replace(base.train, seed=seed, max_steps=steps, progress=progress)
    return _cap_warmup(dataclasses.replace(base, train=train), steps, overrides)


def row_config(row: AblationRow, base_config: str, seed: int, steps: int,
               overrides: Sequence[str] = (), tiny: bool = False) -> PretrainConfig:
    """The pre-training config of ``row``: base config <- row overrides <- user overrides."""
    cfg = load_config(base_config, row_overrides(row, seed, steps, overrides, tiny))
    return _cap_warmup(cfg, steps, overrides)


def _experiment(args: dict[str, Any], out: Path) -> None:
    """Write ``ablation.json`` or check that it matches ``args``."""
    path = out / "ablation.json"
    if path.is_file():
        old = json.loads(path.read_text())["experiment"]
        diff = [k for k in sorted(set(old) | set(args)) if old.get(k) != args.get(k)]
        if diff:
            parts = "; ".join(f"{k}: stored {old.get(k)!r}, now {args.get(k)!r}" for k in diff)
            raise AblationMismatchError(
                f"{path}: this ablation was started with other arguments ({parts}). Re-run with "
                "the stored arguments to finish it, choose a new --out folder, or pass "
                "--overwrite to move this one aside.")
        return
    atomic_write_json(path, {"experiment": args, "created": time.time()})


def _stage(run_dir: Path, run: Callable[[bool], dict]) -> tuple[dict, str]:
    """Run a training stage unless done: ``(summary, "done" | "resumed" | "ran")``."""
    from vlparse.io.checkpoint import find_checkpoint

    summary = run_dir / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text()), "done"
    try:
        find_checkpoint(run_dir)
        resume = True
    except FileNotFoundError:
        resume = False
        if run_dir.exists():  # interrupted before its first checkpoint: start over
            shutil.rmtree(run_dir)
    return run(resume), "resumed" if resume else "ran"


def _headline(task: str, metrics: dict[str, Any], where: Path) -> tuple[str, float]:
    key = HEADLINE_METRICS[task]
    if metrics.get(key) is None:
        raise ConfigError(f"ablation: the {task} evaluation in {where}/summary.json has no "
                          f"'{key}' (got {sorted(metrics)}); does the validation split have "
                          "answers/labels?")
    return key, float(metrics[key])


def _commands(row: AblationRow, a: dict[str, Any], data: str, unit: str, warmup: int,
              ft_warmup: int) -> dict[str, str]:
    """Equivalent ``vlparse`` commands of one unit (``{seed}`` in place of the seed)."""
    pre_ov, ft_ov = _split_overrides(a["overrides"])
    pre = " ".join([*row_overrides(row, 0, a["pretrain_steps"], pre_ov, a["tiny"]),
                    f"optim.warmup_steps={warmup}"])
    pre = pre.replace("train.seed=0", "train.seed={seed}")
    ft = " ".join([*ft_ov, "train.seed={seed}", f"train.max_steps={a['finetune_steps']}",
                   f"optim.warmup_steps={ft_warmup}"])
    return {
        "pretrain": f"vlparse pretrain --config {a['base_config']} --data {data} "
                    f"--out {unit}/pretrain {pre}",
        "finetune": f"vlparse finetune {a['task']} --config {a['finetune_config']} --data {data} "
                    f"--init {unit}/pretrain --out {unit}/{a['task']} {ft}",
        "probe": f"vlparse probe --checkpoint {unit}/pretrain --data {data} --out {unit}/probe "
                 f"--num-samples {a['probe_samples']}",
    }


def _check_counts(seeds: int, pretrain_steps: int, finetune_steps: int,
                  probe_samples: int, max_units: int | None = None) -> None:
    if seeds < 1 or pretrain_steps < 1 or finetune_steps < 1 or probe_samples < 1:
        raise ConfigError("ablate: --seeds, --pretrain-steps, --finetune-steps and "
                          "--probe-samples must be >= 1")
    if max_units is not None and max_units < 0:
        raise ConfigError(f"ablate: --max-units must be >= 0, got {max_units}")


def _resolve_configs(chosen: list, args: dict[str, Any], pre_ov: list[str],
                     ft_ov: list[str]) -> tuple[dict[str, Any], FinetuneConfig]:
    """Every row's pre-training config and the fine-tuning recipe, resolved before any
    training: a wrong key fails now, not hours later."""
    from vlparse.tasks.base import get_task

    task, recipe = args["task"], args["finetune_config"]
    get_task(task)  # fails early for tasks not implemented yet
    cfgs = {r.name: row_config(r, args["base_config"], 0, args["pretrain_steps"], pre_ov,
                               args["tiny"]) for r in chosen}
    ft_cfg = load_config(recipe, ft_ov, cls=FinetuneConfig)
    if ft_cfg.task.name != task:
        raise ConfigError(f"ablate: recipe {recipe!r} is for {ft_cfg.task.name!r}, not "
                          f"--task {task}; pass --finetune-config for {task}")
    return cfgs, ft_cfg


def run_ablation(
    manifest_path: str | Path,
    out_dir: str | Path,
    rows: Sequence[str] | None = None,
    seeds: int = 3,
    pretrain_steps: int = 1000,
    finetune_steps: int = 500,
    base_config: str | None = None,
    finetune_config: str | None = None,
    task: str = "vqa",
    overrides: Sequence[str] = (),
    tiny: bool = False,
    probe_samples: int = 300,
    progress: bool = True,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
    units: str | Path | None = None,
    units_out: str | Path | None = None,
    max_units: int | None = None,
) -> dict[str, Any]:
    """Run (or finish) the ablation and write ``table5.{md,json,png}`` under ``out_dir``.

    Args:
        rows: names from :data:`ROWS` (default: all six).
        seeds: seeds ``0 .. seeds-1`` per row.
        pretrain_steps, finetune_steps: the optimizer steps of every row's two stages.
        base_config: the pre-training config the rows modify (default ``ablation``, or ``tiny``
            when ``tiny``). finetune_config: the recipe (default ``<task>_world``).
        overrides: ``key=value`` for the pre-training config, ``finetune.key=value`` for the
            recipe.
        tiny: CPU-sized row variants (small ResNets, 16-px patches).
        probe_samples: held-out image-caption pairs for ``F^{1,L}``.
        progress: per-step progress bars of the stages.
        log: receives one line per stage, e.g. ``[7/18] swin_mfr seed 1: fine-tune vqa``.
        overwrite: move an earlier ablation in ``out_dir`` aside (``<out>.replaced-<time>``)
            and start anew, instead of finishing it.
        units: a folder of unit files (:mod:`vlparse.tasks.ablation_units`), e.g. committed
            ones: their units are taken from there, not run, and new units are written there.
        units_out: where new unit files go instead (e.g. a folder that comes back from a GPU
            machine); units found there count as done too.
        max_units: run at most this many missing units (``0``: none, only the table).

    Returns:
        the contents of ``table5.json``.
    """
    from vlparse.models.flops import describe_visual

    out = Path(out_dir)
    chosen = get_rows(rows)
    base_config = base_config or ("tiny" if tiny else "ablation")
    finetune_config = finetune_config or f"{task.replace('-', '_')}_world"
    args = dict(base_config=base_config, finetune_config=finetune_config, task=task,
                pretrain_steps=pretrain_steps, finetune_steps=finetune_steps,
                overrides=list(overrides), tiny=tiny, probe_samples=probe_samples)
    _check_counts(seeds, pretrain_steps, finetune_steps, probe_samples, max_units)
    pre_ov, ft_ov = _split_overrides(overrides)
    cfgs, ft_cfg = _resolve_configs(chosen, args, pre_ov, ft_ov)
    if overwrite and (moved := replace_run_folder(out)) is not None:
        log(f"--overwrite: moved the earlier ablation in {out} to {moved}")
    with RunLock.acquire(out):  # a second ablation on this folder is refused
        _experiment(args, out)
        visuals = {name: describe_visual(c.model.visual) for name, c in cfgs.items()}
        ft_record = _ft_config(ft_cfg, 0, finetune_steps, ft_ov)

        results: dict[str, dict[int, dict]] = {r.name: {} for r in chosen}

        def table() -> dict[str, Any]:
            return _table(chosen, seeds, results, cfgs, visuals, ft_record, args, manifest_path,
                          out)

        def run(row: AblationRow, seed: int, say: Callable[[str], None]) -> dict[str, Any]:
            return _run_unit(row, seed, args, manifest_path, out, ft_cfg, pre_ov, ft_ov,
                             progress, say)

        for row, seed, unit in _units(chosen, seeds, args, units, units_out, max_units, run,
                                      log):
            results[row.name][seed] = unit
            write_report(out, table(), plot=False)
        write_report(out, final := table())
        return final


def _units(chosen: list[AblationRow], seeds: int, args: dict[str, Any],
           units: str | Path | None, units_out: str | Path | None, max_units: int | None,
           run: Callable[..., dict[str, Any]], log: Callable[[str], None]):
    """Each (row, seed, summary) of the ablation in order: read from a unit file when one is
    found, else run by ``run(row, seed, say)`` (at most ``max_units`` of them) and written to
    ``units_out`` (or ``units``)."""
    total = len(chosen) * seeds
    writes = Path(units_out) if units_out is not None else units
    folders = [Path(f) for f in (units_out, units) if f is not None]
    ran = 0
    for i, (row, seed) in enumerate(((r, s) for r in chosen for s in range(seeds)), start=1):
        def say(msg: str, row=row, seed=seed, i=i) -> None:
            log(f"[{i}/{total}] {row.name} seed {seed}: {msg}")

        unit = read_unit(folders, row.name, seed, args)
        if unit is not None:
            say("unit file found, not run")
        elif max_units is not None and ran >= max_units:
            say(f"missing, left for a later run (--max-units {max_units})")
            continue
        else:
            unit = run(row, seed, say)
            ran += 1
            if writes is not None:
                say(f"unit file {write_unit(writes, unit, args)}")
        yield row, seed, unit


def _run_unit(row: AblationRow, seed: int, a: dict[str, Any], manifest_path: str | Path,
              out: Path, ft_base: FinetuneConfig, pre_ov: list[str], ft_ov: list[str],
              progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Pre-train, fine-tune and probe one (row, seed); returns (and writes) its summary."""
    from vlparse.data.manifest import load_manifest
    from vlparse.probing.run import probe_checkpoint
    from vlparse.tasks.finetune import run_finetune
    from vlparse.tasks.pretrain import run_pretrain

    unit = out / "runs" / row.name / f"seed{seed}"
    done = unit / "summary.json"
    if done.is_file():
        say("done earlier, skipped")
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    steps, ft_steps, task = a["pretrain_steps"], a["finetune_steps"], a["task"]
    pcfg = row_config(row, a["base_config"], seed, steps, pre_ov, a["tiny"])
    pcfg = dataclasses.replace(pcfg, train=dataclasses.replace(pcfg.train, progress=progress))
    fcfg = _ft_config(ft_base, seed, ft_steps, ft_ov, progress)

    pre_dir, ft_dir = unit / "pretrain", unit / task
    say(f"pre-train ({steps} steps)")
    pre, how = _stage(pre_dir, lambda resume: run_pretrain(pcfg, manifest_path, pre_dir, resume))
    if how != "ran":
        say(f"pre-train {how}")
    say(f"fine-tune {task} ({ft_steps} steps)")
    ft, how = _stage(ft_dir, lambda resume: run_finetune(task, fcfg, manifest_path, ft_dir,
                                                         init=pre_dir, resume=resume))
    if how != "ran":
        say(f"fine-tune {task} {how}")
    layers = pcfg.model.text.num_layers
    say(f"probe F^{{1,{layers}}} ({a['probe_samples']} held-out pairs)")
    d = pcfg.data
    held_out = f"{d.val_set}/{d.val_split}"
    probe = probe_checkpoint(pre_dir, load_manifest(manifest_path), num_samples=a["probe_samples"],
                             imf_data=held_out, nmi_data=held_out, progress=progress)
    flow = probe["F"]
    metric, score = _headline(task, ft["val"] or {}, ft_dir)
    summary = {
        "row": row.name, "seed": seed, "layers": layers,
        "f1L": float(flow[0, layers - 1]), "score": score, "metric": metric,
        "F_1j": [float(v) for v in flow[0]], "probe_samples": probe["num_samples"],
        "probe_split": f"{d.val_set}/{d.val_split}",
        "pretrain": {k: pre.get(k) for k in ("steps", "images_seen", "wall_s", "held_out")},
        "finetune": {k: ft.get(k) for k in ("steps", "examples_seen", "wall_s", "val_split",
                                            "val")},
        "wall_s": time.perf_counter() - t0,
    }
    atomic_write_json(done, summary)
    say(f"F^{{1,{layers}}} = {summary['f1L']:.4f}, {metric} = {score:.4f}")
    return summary


def _table(rows: list[AblationRow], seeds: int, results: dict[str, dict[int, dict]],
           cfgs: dict[str, PretrainConfig], visuals: dict[str, dict], ft_cfg: FinetuneConfig,
           args: dict[str, Any], manifest_path: str | Path, out: Path) -> dict[str, Any]:
    """The contents of ``table5.json`` from the finished units (configs: seed 0's)."""
    table_rows = {}
    metric, layers = None, None
    for row in rows:
        units = results[row.name]
        done = sorted(units.items())
        per_seed = {str(s): {"f1L": u["f1L"], "score": u["score"]} for s, u in done}
        metric = metric or next((u["metric"] for u in units.values()), None)
        layers = cfgs[row.name].model.text.num_layers
        visual = {**visuals[row.name], "grid_size": list(visuals[row.name]["grid_size"])}
        unit = str(out / "runs" / row.name / "seed{seed}")
        table_rows[row.name] = {
            "label": row.label, "backbone": row.backbone, "objectives": row.objectives,
            "visual": visual, "seeds_done": sorted(units),
            "per_seed": per_seed,
            "f1L": summarize([u["f1L"] for _, u in done]),
            "score": summarize([u["score"] for _, u in done]),
            "paper": row.paper._asdict() if row.paper else None,
            "pretrain_config": to_dict(cfgs[row.name]),
            "commands": _commands(row, args, str(manifest_path), unit,
                                  cfgs[row.name].optim.warmup_steps, ft_cfg.optim.warmup_steps),
        }
    return {
        "experiment": args, "seeds": list(range(seeds)), "layers": layers,
        "metric": metric, "task": args["task"],
        "flops_unit": "GMACs (multiply-adds) of the visual embedder per image, the paper's "
                      "'FLOPs (G)' convention; params_m: visual embedder parameters (millions)",
        "std": "sample standard deviation over seeds (ddof=1); null for n < 2",
        "finetune_config": to_dict(ft_cfg), "rows": table_rows,
    }
