"""``vlparse probe`` for runs of either family: the paper's IMF and NMI for Visual Parsing runs
(:func:`~vlparse.probing.run.run_probe`), the generalised inter-modality flow and the gate values
for FIBER runs (:mod:`~vlparse.probing.fiber_flow`), and, when both families are probed, a
figure that draws them side by side.

Writes into the output folder ``fiber_flow.json`` and ``fiber_flow.png`` (FIBER runs), and
``imf.json``, ``nmi.json`` and their figures (Visual Parsing runs). The FIBER flow reads the
pairs of the IMF probe (``imf_data``). The modality NMI does not apply to FIBER: its image and
text streams never share a sequence and have different widths, so there is no set of hidden
states to cluster by modality; asking for it on FIBER runs alone is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlparse.errors import CheckpointError, ProbeNotApplicableError
from vlparse.probing.fiber_flow import DIRECTIONS, FiberFlowAccumulator
from vlparse.probing.run import IMF_DATA, NMI_DATA, _default_labels, _source_records, run_probe
from vlparse.utils import autocast_dtype

__all__ = ["FLOW_NAME", "load_fiber_run", "plot_fiber_flow", "probe_fiber_checkpoint",
           "run_family", "run_probes"]

FLOW_NAME = "fiber_flow.json"


def run_family(path: str | Path) -> str:
    """``model.family`` of the run (or checkpoint step folder) at ``path``."""
    from vlparse.io.runs import read_run_config
    from vlparse.models.loading import find_run_dir

    model = read_run_config(find_run_dir(path)).get("model") or {}
    return str(model.get("family", "visual_parsing")) if isinstance(model, dict) else ""


def load_fiber_run(path: str | Path) -> tuple[nn.Module, Any, Any]:
    """``(model, cfg, processor)`` of a FIBER pre-training run: the model of its
    ``config.yaml`` with the weights of its newest checkpoint (or of the step folder given), in
    eval mode on the CPU.

    Raises:
        FileNotFoundError: no run or checkpoint there. CheckpointError: weights that cannot be
            read or do not match the config.
    """
    from safetensors.torch import load_model

    from vlparse.config import PretrainConfig, from_dict, validate
    from vlparse.io.checkpoint import find_checkpoint
    from vlparse.io.runs import read_run_config
    from vlparse.models.fiber import FiberModel, FiberProcessor
    from vlparse.models.loading import find_run_dir

    cfg = from_dict(PretrainConfig, read_run_config(find_run_dir(path)))
    validate(cfg)
    weights = find_checkpoint(path) / "model.safetensors"
    model = FiberModel(cfg.model, objectives=cfg.objectives)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except Exception as e:  # safetensors raises its own error type, or OSError
        raise CheckpointError(weights, f"cannot be read ({type(e).__name__}: {e})") from None
    if missing or unexpected:
        raise CheckpointError(weights, f"does not match the FIBER model of the run's config: "
                                       f"missing {sorted(missing)[:3]}, unexpected "
                                       f"{sorted(unexpected)[:3]}")
    return model.eval(), cfg, FiberProcessor.from_config(cfg.model)


def probe_fiber_checkpoint(
    checkpoint: str | Path,
    manifest: dict,
    num_samples: int = 1000,
    batch_size: int = 32,
    data: str = IMF_DATA,
    progress: bool = True,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """The generalised flow and the gates of one FIBER checkpoint over ``num_samples`` matched
    image-caption pairs of ``data`` (``"pretrain"`` or ``"DATASET/SPLIT"``; a seeded random
    choice of images, one caption each, as the IMF probe takes them). bf16 autocast on CUDA
    unless the run trained in fp32.

    Returns:
        The ``fiber_flow.json`` entry: ``pairs`` (each fused pair's image stage and block and its
        text layer, 1-based), ``flow_i2t`` / ``flow_t2i`` and ``gate_i2t`` / ``gate_t2i`` (one
        value per pair, bottom up), ``num_samples``, ``data``, ``model``.
    """
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from vlparse.data import PretrainCollator, PretrainDataset

    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"probe: num_samples and batch_size must be >= 1, got {num_samples}, "
                         f"{batch_size}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg, processor = load_fiber_run(checkpoint)
    model.to(dev)
    records = _source_records(manifest, cfg, data)
    dataset = PretrainDataset(records, on_error=cfg.data.on_error)
    collate = PretrainCollator(records, processor, 0, num_pos=1, num_neg=0, mlm_prob=0.0, seed=0)
    n = min(num_samples, len(dataset))
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    workers = cfg.data.num_workers if num_workers is None else num_workers
    loader = DataLoader(Subset(dataset, sorted(chosen.tolist())), batch_size=batch_size,
                        collate_fn=collate, num_workers=workers, pin_memory=dev.type == "cuda")
    dtype = autocast_dtype(cfg.train.precision, dev)
    flow = FiberFlowAccumulator(len(model.pairs))
    bar = tqdm(total=n, desc=f"probe {Path(checkpoint).name} {data}", disable=not progress,
               leave=False)
    with bar:
        for batch in loader:
            amp = torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()
            with amp:
                flow.update(model, batch["image"].to(dev), batch["input_ids"][:, 0].to(dev),
                            batch["attention_mask"][:, 0].to(dev))
            bar.update(batch["image"].shape[0])
    values, gates = flow.compute(), model.gates.detach().double().cpu()
    entry: dict[str, Any] = {
        "pairs": [{"image_stage": p.image_stage + 1, "image_block": p.image_block + 1,
                   "text_layer": p.text_layer + 1} for p in model.pairs],
        "num_text_layers": cfg.model.text.num_layers,
    }
    for col, name in enumerate(DIRECTIONS):
        entry[f"flow_{name}"] = values[:, col].tolist()
        entry[f"gate_{name}"] = gates[:, col].tolist()
    entry.update(num_samples=flow.num_samples, data=data, model=cfg.model.name)
    return entry


def plot_fiber_flow(fiber: Mapping[str, Mapping[str, Any]], path: str | Path,
                    single_stream: Mapping[str, Sequence[float | None]] | None = None) -> Path:
    """Two panels over relative depth (layer / layers of the text backbone, or of the
    single-stream encoder): the gate values of each fused pair, and the generalised flow of
    each pair and direction beside the single-stream models' cross-modal attention share
    ``2 F^{l,l}`` (what the flow reduces to, :mod:`~vlparse.probing.fiber_flow`).

    Args:
        fiber: ``{label: fiber_flow.json entry}`` (:func:`probe_fiber_checkpoint`).
        path: the PNG to write.
        single_stream: ``{label: [F^{1,1}, ..., F^{L,L}]}`` of Visual Parsing runs (``null``
            entries are gaps), or ``None``.
    """
    import math

    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=120)
    gates_ax, flow_ax = fig.subplots(1, 2)
    styles = {"i2t": ("o", "-", "into image (i2t)"), "t2i": ("s", "--", "into text (t2i)")}
    for label, entry in fiber.items():
        depth = [p["text_layer"] / entry["num_text_layers"] for p in entry["pairs"]]
        for name, (marker, line, words) in styles.items():
            gates_ax.plot(depth, entry[f"gate_{name}"], marker=marker, linestyle=line,
                          label=f"{label}: {words}")
            flow_ax.plot(depth, entry[f"flow_{name}"], marker=marker, linestyle=line,
                         label=f"FIBER {label}: {words}")
    for label, within in (single_stream or {}).items():
        share = [math.nan if v is None else 2.0 * float(v) for v in within]
        depth = [(i + 1) / len(share) for i in range(len(share))]
        flow_ax.plot(depth, share, marker="^", color="black", alpha=0.7,
                     label=f"Visual Parsing {label}: 2 F(l,l)")
    gates_ax.axhline(0.0, color="grey", linewidth=0.8)
    gates_ax.set(xlabel="depth (text layer / layers)", ylabel="gate value",
                 title="Gates of the fused pairs")
    flow_ax.set(xlabel="depth (layer / layers)", ylabel="share of the update from the other "
                "modality", title="Inter-modality flow per layer", ylim=(-0.02, 1.02))
    for ax in (gates_ax, flow_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def run_probes(
    checkpoints: list[str],
    labels: list[str] | None,
    manifest: dict | str | Path,
    out_dir: str | Path,
    num_samples: int = 1000,
    batch_size: int = 32,
    imf_data: str = IMF_DATA,
    nmi_data: str | None = None,
    progress: bool = True,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Probe runs of either family (see the module docstring).

    Args:
        checkpoints: run folders or checkpoint step folders, of either family, in any order.
        labels: one name per checkpoint (default: the folder names).
        nmi_data: the NMI probe's source for Visual Parsing runs (``None``: the paper's,
            :data:`~vlparse.probing.run.NMI_DATA`); giving it with FIBER runs only is refused.
        The rest as :func:`~vlparse.probing.run.run_probe`.

    Returns:
        ``{"fiber_flow": {label: entry}}`` for FIBER runs and/or ``run_probe``'s ``{"imf":
        ..., "nmi": ...}`` for Visual Parsing runs.

    Raises:
        ProbeNotApplicableError: the NMI asked for FIBER runs alone; a run of an unknown family.
    """
    from vlparse.data.manifest import load_manifest

    if labels is None or len(labels) == 0:
        labels = _default_labels(checkpoints)
    if len(labels) != len(checkpoints):
        raise ValueError(f"probe: {len(labels)} labels for {len(checkpoints)} checkpoints; give "
                         "one --label per --checkpoint or none.")
    families = [run_family(c) for c in checkpoints]
    for ckpt, family in zip(checkpoints, families, strict=True):
        if family not in ("fiber", "visual_parsing"):
            raise ProbeNotApplicableError(f"probe: {ckpt} is a run of model family "
                                          f"{family!r}, which the probes do not know")
    single = [(lab, c) for lab, c, f in zip(labels, checkpoints, families, strict=True)
              if f != "fiber"]
    fiber = [(lab, c) for lab, c, f in zip(labels, checkpoints, families, strict=True)
             if f == "fiber"]
    if nmi_data is not None and not single:
        raise ProbeNotApplicableError(
            "probe: the modality NMI does not apply to FIBER runs (their image and text "
            "streams never share a sequence); drop --nmi-data")
    if not isinstance(manifest, dict):
        manifest = load_manifest(manifest)
    out, result = Path(out_dir), {}
    if single:
        result = run_probe([c for _, c in single], [lab for lab, _ in single], manifest, out,
                           num_samples, batch_size, imf_data, nmi_data or NMI_DATA, progress,
                           num_workers)
    if fiber:
        flows = {lab: probe_fiber_checkpoint(c, manifest, num_samples, batch_size, imf_data,
                                             progress, num_workers=num_workers)
                 for lab, c in fiber}
        out.mkdir(parents=True, exist_ok=True)
        (out / FLOW_NAME).write_text(json.dumps(flows, indent=2) + "\n")
        within = {lab: v["F_ii"] for lab, v in result.get("imf", {}).items()}
        plot_fiber_flow(flows, out / "fiber_flow.png", within or None)
        result["fiber_flow"] = flows
    return result
