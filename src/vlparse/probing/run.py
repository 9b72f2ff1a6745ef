"""``vlparse probe``: Inter-Modality Flow and modality NMI of pre-trained checkpoints.

Writes ``imf.json``, ``nmi.json`` and the figures ``imf_from_input.png``,
``imf_within_layer.png`` and ``nmi.png`` into an output folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["probe_checkpoint", "run_probe"]


def _nan_to_none(values: Sequence[Any]) -> list[Any]:
    """Nested lists of floats with NaN replaced by ``None`` (JSON ``null``)."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.append(_nan_to_none(v))
        else:
            f = float(v)
            out.append(None if math.isnan(f) else f)
    return out


def _default_labels(checkpoints: Sequence[str]) -> list[str]:
    """Labels from the checkpoint paths: the folder name, made unique with a suffix."""
    labels: list[str] = []
    for ckpt in checkpoints:
        p = Path(ckpt)
        name = p.name if not p.name.startswith("step_") else f"{p.parent.parent.name}/{p.name}"
        base, k = name or str(ckpt), 2
        while name in labels:
            name = f"{base}-{k}"
            k += 1
        labels.append(name)
    return labels


def probe_checkpoint(
    checkpoint: str | Path,
    manifest: dict,
    num_samples: int = 1000,
    batch_size: int = 32,
    dataset: str = "coco",
    split: str = "val",
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """IMF and NMI of one checkpoint over the matched image-caption pairs of a split.

    Returns:
        ``{"F": (L, L) tensor (NaN below the diagonal), "nmi": (L + 1,) tensor,
        "num_samples": int, "model": str}``.
    """
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from vlparse.data import read_pretrain_records
    from vlparse.data.collate import collate_pretrain
    from vlparse.data.pretrain import PretrainDataset
    from vlparse.models.loading import load_run
    from vlparse.probing import IMFAccumulator, NMIAccumulator, probe_vlparse

    if num_samples < 1 or batch_size < 1:
        raise ValueError(
            f"probe: num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}"
        )
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg, tokenizer = load_run(checkpoint)
    model.to(dev)
    records = read_pretrain_records(manifest, [dataset], [split])
    if not records:
        raise FileNotFoundError(
            f"probe: the manifest has no captioned images for {dataset}/{split}; pick a data set "
            "and split it lists."
        )
    data = PretrainDataset(
        records,
        tokenizer,
        image_size=cfg.model.visual.image_size,
        max_text_len=cfg.model.text.max_text_len,
        num_visual_tokens=model.num_visual_tokens,
        num_pos=1,
        num_neg=0,
        mlm_prob=0.0,
        seed=0,
        on_error=cfg.data.on_error,
    )
    n = min(num_samples, len(data))
    loader = DataLoader(
        Subset(data, range(n)), batch_size=batch_size, shuffle=False, collate_fn=collate_pretrain
    )
    imf: IMFAccumulator | None = None
    nmi: NMIAccumulator | None = None
    bar = tqdm(total=n, desc=f"probe {Path(checkpoint).name}", disable=not progress, leave=False)
    for batch in loader:
        ids = batch["input_ids"][:, 0].to(dev)  # (B, L) the matched caption
        mask = batch["attention_mask"][:, 0].to(dev)
        probe = probe_vlparse(model, batch["image"].to(dev), ids, mask)
        if imf is None:
            imf = IMFAccumulator(probe.num_layers)
            nmi = NMIAccumulator(len(probe.hidden_states))
        imf.update(probe.attentions, probe.modality)
        nmi.update([h.float().cpu() for h in probe.hidden_states], probe.modality.cpu())
        bar.update(ids.shape[0])
    bar.close()
    if imf is None or nmi is None:
        raise RuntimeError(f"probe: no samples were read from {dataset}/{split}")
    return {
        "F": imf.compute(),
        "nmi": nmi.compute(),
        "num_samples": imf.num_samples,
        "model": cfg.model.name,
    }


def run_probe(
    checkpoints: list[str],
    labels: list[str] | None,
    manifest: dict | str | Path,
    out_dir: str | Path,
    num_samples: int = 1000,
    batch_size: int = 32,
    dataset: str = "coco",
    split: str = "val",
    progress: bool = True,
) -> dict[str, Any]:
    """Probe each checkpoint and write ``imf.json``, ``nmi.json`` and three figures.

    Args:
        checkpoints: run folders or checkpoint step folders of ``vlparse pretrain`` runs.
        labels: one name per checkpoint for the JSON keys and legends (default: folder names).
        manifest: a manifest dict or the path of ``manifest.json``.
        out_dir: output folder (created).
        num_samples: at most this many matched image-caption pairs per checkpoint.
        dataset, split: where the pairs come from.

    Returns:
        ``{"imf": {label: {...}}, "nmi": {label: {...}}}``, the contents of the two JSON files.
        ``imf[label]`` holds ``F`` (``L x L`` lists, ``null`` below the diagonal), ``F_1j``,
        ``F_ii``, ``num_samples`` and ``model``; ``nmi[label]`` holds ``nmi`` (``L + 1``).
    """
    from vlparse.data.manifest import load_manifest
    from vlparse.probing.plots import plot_imf_from_input, plot_imf_within_layer, plot_nmi

    if not checkpoints:
        raise ValueError("run_probe: give at least one checkpoint")
    if labels is None or len(labels) == 0:
        labels = _default_labels(checkpoints)
    if len(labels) != len(checkpoints):
        raise ValueError(
            f"run_probe: {len(labels)} labels for {len(checkpoints)} checkpoints; give one "
            "--label per --checkpoint or none."
        )
    if len(set(labels)) != len(labels):
        raise ValueError(f"run_probe: labels must be unique, got {labels}")
    if not isinstance(manifest, dict):
        manifest = load_manifest(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    imf_json: dict[str, Any] = {}
    nmi_json: dict[str, Any] = {}
    for label, ckpt in zip(labels, checkpoints, strict=True):
        res = probe_checkpoint(ckpt, manifest, num_samples, batch_size, dataset, split, progress)
        flow = res["F"]
        imf_json[label] = {
            "F": _nan_to_none(flow.tolist()),
            "F_1j": _nan_to_none(flow[0].tolist()),
            "F_ii": _nan_to_none(torch.diagonal(flow).tolist()),
            "num_samples": res["num_samples"],
            "model": res["model"],
        }
        nmi_json[label] = {"nmi": _nan_to_none(res["nmi"].tolist())}

    (out / "imf.json").write_text(json.dumps(imf_json, indent=2))
    (out / "nmi.json").write_text(json.dumps(nmi_json, indent=2))
    plot_imf_from_input({k: v["F_1j"] for k, v in imf_json.items()}, out / "imf_from_input.png")
    plot_imf_within_layer({k: v["F_ii"] for k, v in imf_json.items()}, out / "imf_within_layer.png")
    plot_nmi({k: v["nmi"] for k, v in nmi_json.items()}, out / "nmi.png")
    return {"imf": imf_json, "nmi": nmi_json}
