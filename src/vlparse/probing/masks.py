"""Attention-guided MFR masks drawn like Figure 2 of the paper (``vlparse probe masks``).

For a few images of a split, one row each: the image; the attention-guided Masked Feature
Regression mask (a random anchor token and the ``k - 1`` tokens it attends to most in the visual
parser's last attention map, :func:`vlparse.models.visual_masking.attention_guided_mask`); a
random mask of the same size (the ``random`` mode,
:func:`vlparse.models.visual_masking.random_mask`, with the same anchor); optionally the
anchor's attention row as a heat map; and one of its captions.

The masks are those pre-training would draw: the anchor is ``argmax`` of uniform noise and ``k``
comes from the run's ``objectives.mfr_k`` / ``objectives.mfr_ratio``
(:func:`vlparse.models.visual_masking.mfr_visual_mask`). Images, captions and noise come from one
generator seeded by ``seed``, so a figure is a pure function of the checkpoint, data and seed.
Next to the PNG a JSON file of the same name lists, per row, the image, caption, anchor and the
masked token indices (row-major over the parser's token grid).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["MaskRow", "mask_figure", "mask_rows", "overlay_mask"]

ANCHOR_COLOR = (0.95, 0.1, 0.1)
MASK_COLOR = (0.1, 0.45, 1.0)
BLEND = 0.6  # weight of the colour in a masked cell


@dataclass
class MaskRow:
    """One image of the figure.

    Attributes:
        image_path: the image file.
        caption: the caption shown.
        image: ``(S, S, 3)`` float array in ``[0, 1]`` (the model's input, de-normalised).
        grid: ``(h, w)`` token grid of the visual parser, ``h * w = m``.
        anchor: index of the anchor token in ``[0, m)``.
        attention: ``(m,)`` the anchor's row of the parser's last attention map.
        attention_mask: ``(m,)`` bool, the attention-guided MFR mask (``k`` True).
        random_mask: ``(m,)`` bool, the random MFR mask of the same anchor and size.
    """

    image_path: str
    caption: str
    image: np.ndarray
    grid: tuple[int, int]
    anchor: int
    attention: Tensor
    attention_mask: Tensor
    random_mask: Tensor


def _cell_edges(size: int, cells: int) -> list[int]:
    """Pixel edges of ``cells`` equal cells over ``size`` pixels (``cells + 1`` values)."""
    return [round(i * size / cells) for i in range(cells + 1)]


def overlay_mask(image: np.ndarray, mask: Tensor, grid: tuple[int, int], anchor: int) -> np.ndarray:
    """The image with masked token cells shaded: the anchor red, the other masked cells blue.

    Args:
        image: ``(H, W, 3)`` float in ``[0, 1]``.
        mask: ``(m,)`` bool over the ``grid`` tokens, row-major, ``m = h * w``.
        grid: ``(h, w)`` token grid; cell ``t`` covers row ``t // w``, column ``t % w``.
        anchor: the anchor token (drawn red whether or not ``mask`` holds it).

    Returns:
        ``(H, W, 3)`` float array; pixels outside masked cells equal ``image``.
    """
    h, w = grid
    if mask.numel() != h * w:
        raise ValueError(
            f"overlay_mask: mask has {mask.numel()} tokens, the grid {h}x{w} has {h * w}."
        )
    out = np.array(image, dtype=np.float64, copy=True)
    rows, cols = _cell_edges(out.shape[0], h), _cell_edges(out.shape[1], w)
    flags = mask.detach().cpu().bool().reshape(-1).tolist()
    for t, masked in enumerate(flags):
        if not masked and t != anchor:
            continue
        color = np.asarray(ANCHOR_COLOR if t == anchor else MASK_COLOR)
        r, c = divmod(t, w)
        cell = out[rows[r] : rows[r + 1], cols[c] : cols[c + 1]]
        cell[...] = (1.0 - BLEND) * cell + BLEND * color
    return out


def _pick(records: list, num_images: int, gen: torch.Generator) -> list:
    if num_images < 1:
        raise ValueError(f"mask_figure: num_images must be >= 1, got {num_images}.")
    order = torch.randperm(len(records), generator=gen)[: min(num_images, len(records))]
    return [records[int(i)] for i in order]


@torch.no_grad()
def mask_rows(
    model, cfg, records: list, num_images: int = 8, seed: int = 0
) -> list[MaskRow]:
    """The rows of the figure: masks of ``num_images`` records drawn with ``seed``.

    Args:
        model: a :class:`~vlparse.models.single_stream.VisualParsingModel` whose visual parser
            returns its attention (``encode_image(..., output_attentions=True)``).
        cfg: the run's :class:`~vlparse.config.PretrainConfig` (image size, ``mfr_k``,
            ``mfr_ratio``).
        records: :class:`~vlparse.data.formats.records.ImageCaptions` with captions.
        num_images: rows (at most ``len(records)``).
        seed: picks the images, their captions and the MFR noise.
    """
    from vlparse.models.visual_masking import mfr_visual_mask
    from vlparse.processing import denormalize, image_transform, load_image

    if not records:
        raise ValueError("mask_figure: no image-caption records to draw.")
    gen = torch.Generator().manual_seed(int(seed))
    chosen = _pick(records, num_images, gen)
    transform = image_transform(cfg.model.visual.image_size)
    images = torch.stack([transform(load_image(r.image_path)) for r in chosen])
    captions = [
        r.captions[int(torch.randint(len(r.captions), (1,), generator=gen))] for r in chosen
    ]
    device = next(model.parameters()).device
    vis = model.encode_image(images.to(device), output_attentions=True)
    if vis.attention is None:
        raise ValueError(
            f"mask_figure: the visual embedder ({cfg.model.visual.kind}) returns no attention "
            "map, so there is no attention-guided mask to draw; use a run with the Swin parser."
        )
    attention = vis.attention.float().cpu()  # (B, m, m)
    b, m = attention.shape[:2]
    noise = torch.rand(b, m, generator=gen)  # anchors: argmax, as in pre-training
    k, ratio = cfg.objectives.mfr_k, cfg.objectives.mfr_ratio
    att_mask = mfr_visual_mask("attention", k, ratio, noise, attention)
    rnd_mask = mfr_visual_mask("random", k, ratio, noise, None)
    anchors = noise.argmax(dim=1)
    shown = denormalize(images).permute(0, 2, 3, 1).numpy()
    return [
        MaskRow(
            image_path=str(r.image_path),
            caption=captions[i],
            image=shown[i],
            grid=tuple(vis.grid_size),
            anchor=int(anchors[i]),
            attention=attention[i, int(anchors[i])],
            attention_mask=att_mask[i],
            random_mask=rnd_mask[i],
        )
        for i, r in enumerate(chosen)
    ]


def _draw(rows: list[MaskRow], k: int, out_png: Path, attention_map: bool) -> None:
    from matplotlib.figure import Figure

    titles = ["image", f"attention-guided mask (k={k})", f"random mask (k={k})"]
    if attention_map:
        titles.append("anchor's attention")
    titles.append("caption")
    ncols = len(titles)
    fig = Figure(figsize=(2.3 * ncols, 2.4 * len(rows) + 0.4), dpi=110)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, row in enumerate(rows):
        h, w = row.grid
        size_y, size_x = row.image.shape[:2]
        ay, ax_ = divmod(row.anchor, w)
        center = ((ax_ + 0.5) * size_x / w - 0.5, (ay + 0.5) * size_y / h - 0.5)
        panels = [
            row.image,
            overlay_mask(row.image, row.attention_mask, row.grid, row.anchor),
            overlay_mask(row.image, row.random_mask, row.grid, row.anchor),
        ]
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c < 3 or (attention_map and c == 3):
                ax.imshow(panels[0] if c >= 3 else panels[c], interpolation="nearest")
                if c == 3:
                    heat = row.attention.reshape(h, w).numpy()
                    ax.imshow(heat, cmap="inferno", alpha=0.65, interpolation="nearest",
                              extent=(-0.5, size_x - 0.5, size_y - 0.5, -0.5))
                if c > 0:
                    for x in _cell_edges(size_x, w)[1:-1]:
                        ax.axvline(x - 0.5, color="white", linewidth=0.4, alpha=0.6)
                    for y in _cell_edges(size_y, h)[1:-1]:
                        ax.axhline(y - 0.5, color="white", linewidth=0.4, alpha=0.6)
                    ax.plot(*center, marker="*", markersize=11, color="white",
                            markeredgecolor="black", markeredgewidth=0.8)
            else:
                for side in ax.spines.values():
                    side.set_visible(False)
                ax.text(0.02, 0.5, textwrap.fill(row.caption, 26), fontsize=8.5,
                        va="center", ha="left", transform=ax.transAxes, wrap=True)
        axes[r][0].set_ylabel(Path(row.image_path).name, fontsize=7)
    fig.suptitle("MFR masks: red = anchor (star), blue = other masked tokens", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png)


def mask_figure(
    run_dir_or_ckpt: str | Path,
    manifest: dict | str | Path,
    out_png: str | Path,
    num_images: int = 8,
    dataset: str = "coco",
    split: str = "val",
    seed: int = 0,
    *,
    attention_map: bool = True,
) -> Path:
    """Draw the attention-guided and random MFR masks of a pre-trained run (paper Figure 2).

    Args:
        run_dir_or_ckpt: a ``vlparse pretrain`` run folder or a ``checkpoints/step_*`` folder.
        manifest: a manifest dict or the path of ``manifest.json``.
        out_png: the PNG to write (its folder is created); a ``.json`` of the same stem next to
            it lists each row's image, caption, anchor and masked token indices.
        num_images: rows of the figure (at most the number of captioned images of the split).
        dataset, split: where the images come from.
        seed: picks the images, captions and anchors (same seed, same figure).
        attention_map: add a column with the anchor's attention over the token grid.

    Returns:
        The path of the PNG.
    """
    from vlparse.data import read_pretrain_records
    from vlparse.data.manifest import load_manifest
    from vlparse.models.loading import load_run
    from vlparse.models.visual_masking import num_mfr_tokens

    if not isinstance(manifest, dict):
        manifest = load_manifest(manifest)
    try:
        records = read_pretrain_records(manifest, [dataset], [split])
    except ValueError as e:
        raise FileNotFoundError(f"mask_figure: {e}") from e
    model, cfg, _ = load_run(run_dir_or_ckpt)
    rows = mask_rows(model, cfg, records, num_images, seed)
    k = num_mfr_tokens(model.num_visual_tokens, cfg.objectives.mfr_k, cfg.objectives.mfr_ratio)

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    _draw(rows, k, out_png, attention_map)
    sidecar = {
        "checkpoint": str(run_dir_or_ckpt),
        "dataset": dataset,
        "split": split,
        "seed": seed,
        "k": k,
        "grid": list(rows[0].grid),
        "rows": [
            {
                "image": row.image_path,
                "caption": row.caption,
                "anchor": row.anchor,
                "attention_mask": torch.nonzero(row.attention_mask).flatten().tolist(),
                "random_mask": torch.nonzero(row.random_mask).flatten().tolist(),
            }
            for row in rows
        ],
    }
    out_png.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return out_png
