"""``vlparse probe``: Inter-Modality Flow and modality NMI of pre-trained checkpoints.

Writes ``imf.json``, ``nmi.json`` and the figures ``imf_from_input.png``,
``imf_within_layer.png`` and ``nmi.png`` into an output folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlparse.probing.adapters import probe_vlparse
from vlparse.probing.imf import IMFAccumulator
from vlparse.probing.nmi import NMIAccumulator
from vlparse.utils import autocast_dtype

__all__ = ["probe_batches", "probe_checkpoint", "run_probe"]


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


def probe_batches(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    autocast: bool = False,
    nmi_backend: str = "torch",
    nmi_samples: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[IMFAccumulator, NMIAccumulator]:
    """Run the IMF and NMI probes of a vlparse model over batches, all on the model's device.

    The loop of ``vlparse probe`` (:func:`probe_checkpoint`): per batch the forward with
    attentions and hidden states (:func:`vlparse.probing.probe_vlparse`), under bf16 autocast
    if ``autocast``, then the updates of both accumulators, which compute in float32 with
    autocast off and keep their sums on the device. Nothing waits for the device until the
    caller reads the accumulators with ``compute()``.

    Args:
        model: a :class:`~vlparse.models.single_stream.VisualParsingModel` in eval mode.
        batches: ``(images (B, 3, H, W), input_ids (B, L), attention_mask (B, L))`` on the
            model's device.
        autocast: bf16 autocast of the forward (CUDA).
        nmi_backend: ``"torch"`` or ``"sklearn"`` (see :mod:`vlparse.probing.nmi`).
        nmi_samples: give only the first this many samples to the NMI probe (default: all).
        on_batch: called with each batch's size (e.g. a progress bar's ``update``).

    Returns:
        The ``IMFAccumulator`` and ``NMIAccumulator`` (raises ``RuntimeError`` on no batch).
    """
    imf: IMFAccumulator | None = None
    nmi: NMIAccumulator | None = None
    left = None if nmi_samples is None else max(0, nmi_samples)
    for images, ids, mask in batches:
        amp = torch.autocast(images.device.type, dtype=torch.bfloat16) if autocast else None
        with amp or nullcontext():
            probe = probe_vlparse(model, images, ids, mask)
        if imf is None or nmi is None:
            imf = IMFAccumulator(probe.num_layers)
            nmi = NMIAccumulator(len(probe.hidden_states), backend=nmi_backend)
        imf.update(probe.attentions, probe.modality)
        take = ids.shape[0] if left is None else min(left, ids.shape[0])
        if take > 0:
            nmi.update([h[:take] for h in probe.hidden_states], probe.modality[:take])
            left = None if left is None else left - take
        if on_batch is not None:
            on_batch(ids.shape[0])
        del probe
    if imf is None or nmi is None:
        raise RuntimeError("probe_batches: got no batch; give at least one.")
    return imf, nmi


def _pairs_loader(model, cfg, tokenizer, manifest: dict, dataset: str, split: str,
                  num_samples: int, batch_size: int, workers: int, pin_memory: bool
                  ) -> tuple[Any, int]:
    """A loader of the first ``num_samples`` images of ``dataset``/``split`` with one caption
    each (drawn by the seeded generator of the image's index), and the number of images."""
    from torch.utils.data import DataLoader, Subset

    from vlparse.data import PretrainCollator, PretrainDataset, read_pretrain_records
    from vlparse.models.processor import VisualParsingProcessor

    records = read_pretrain_records(manifest, [dataset], [split])
    if not records:
        raise FileNotFoundError(
            f"probe: the manifest has no captioned images for {dataset}/{split}; pick a data set "
            "and split it lists."
        )
    data = PretrainDataset(records, on_error=cfg.data.on_error)
    processor = VisualParsingProcessor(tokenizer, cfg.model.visual.image_size,
                                       cfg.model.text.max_text_len)
    collate = PretrainCollator(records, processor, model.num_visual_tokens, num_pos=1,
                               num_neg=0, mlm_prob=0.0, seed=0)
    n = min(num_samples, len(data))
    loader = DataLoader(Subset(data, range(n)), batch_size=batch_size, shuffle=False,
                        collate_fn=collate, num_workers=workers, pin_memory=pin_memory)
    return loader, n


def probe_checkpoint(
    checkpoint: str | Path,
    manifest: dict,
    num_samples: int = 1000,
    batch_size: int = 32,
    dataset: str = "coco",
    split: str = "val",
    progress: bool = True,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
    autocast: bool | None = None,
    nmi_backend: str = "torch",
) -> dict[str, Any]:
    """IMF and NMI of one checkpoint over the matched image-caption pairs of a split.

    Everything stays on ``device``: the forward runs under bf16 autocast on CUDA (as the
    evaluation does; the probes compute in float32 with autocast off), the IMF and
    NMI accumulators keep their sums there, and nothing is read back until the end, so the
    loop never waits for the device.

    Args:
        num_workers: DataLoader workers (default: the run's ``data.num_workers``); pinned
            memory on CUDA.
        autocast: bf16 autocast of the forward; default as the run's ``train.precision``
            decides (:func:`~vlparse.utils.autocast_dtype`: on CUDA unless ``fp32``).
        nmi_backend: ``"torch"`` (batched 2-means on ``device``) or ``"sklearn"`` (CPU
            ``KMeans`` per sample; slow), see :func:`vlparse.probing.nmi.modality_nmi`.

    Returns:
        ``{"F": (L, L) tensor (NaN below the diagonal), "nmi": (L + 1,) tensor,
        "num_samples": int, "model": str}``.
    """
    from tqdm.auto import tqdm

    from vlparse.models.loading import load_run

    if num_samples < 1 or batch_size < 1:
        raise ValueError(
            f"probe: num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}"
        )
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg, tokenizer = load_run(checkpoint)
    model.to(dev).eval()
    workers = cfg.data.num_workers if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"probe: num_workers must be >= 0, got {workers}")
    loader, n = _pairs_loader(model, cfg, tokenizer, manifest, dataset, split, num_samples,
                              batch_size, workers, pin_memory=dev.type == "cuda")
    if autocast is None:
        autocast = autocast_dtype(cfg.train.precision, dev) is not None

    def on_device(loader: Iterable[dict]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for batch in loader:
            yield (
                batch["image"].to(dev, non_blocking=True),
                batch["input_ids"].to(dev, non_blocking=True)[:, 0],  # (B, L) matched caption
                batch["attention_mask"].to(dev, non_blocking=True)[:, 0],
            )

    bar = tqdm(total=n, desc=f"probe {Path(checkpoint).name}", disable=not progress, leave=False)
    try:
        imf, nmi = probe_batches(
            model, on_device(loader), autocast=autocast, nmi_backend=nmi_backend,
            on_batch=bar.update,
        )
    finally:
        bar.close()
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
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Probe each checkpoint and write ``imf.json``, ``nmi.json`` and three figures.

    Args:
        checkpoints: run folders or checkpoint step folders of ``vlparse pretrain`` runs.
        labels: one name per checkpoint for the JSON keys and legends (default: folder names).
        manifest: a manifest dict or the path of ``manifest.json``.
        out_dir: output folder (created).
        num_samples: at most this many matched image-caption pairs per checkpoint.
        dataset, split: where the pairs come from.
        num_workers: DataLoader workers per checkpoint (default: each run's
            ``data.num_workers``).

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
        res = probe_checkpoint(
            ckpt, manifest, num_samples, batch_size, dataset, split, progress,
            num_workers=num_workers,
        )
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
