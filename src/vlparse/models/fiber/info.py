"""What ``vlparse info`` says about a FIBER model: its backbones, the fused pairs and the
parameters of each module role (works on the meta device: sizes only)."""

from __future__ import annotations

from vlparse.config.training import OptimConfig

__all__ = ["format_fiber_info"]


def format_fiber_info(model) -> str:
    """Lines describing a :class:`~vlparse.models.fiber.FiberModel`."""
    v, t = model.cfg.visual, model.cfg.text
    h, w = model.image.grid_size
    roles: dict[str, int] = {}
    for group in model.param_groups(OptimConfig()):
        role = group["name"].removesuffix("_no_decay").removesuffix("_decay")
        roles[role] = roles.get(role, 0) + sum(p.numel() for p in group["params"])
    pairs = ", ".join(f"{p.image_stage}.{p.image_block} <-> {p.text_layer}" for p in model.pairs)
    return "\n".join([
        f"image backbone: {v.arch} at {v.image_size}x{v.image_size} px, depths {v.depths}, "
        f"widths {model.image.widths}; last grid {h} x {w} ({h * w} tokens)",
        f"text backbone: {t.kind}, {t.num_layers} layers, {t.hidden_size} wide, vocabulary "
        f"{t.vocab_size}, texts of at most {t.max_text_len} tokens (special tokens included)",
        f"fused pairs (image stage.block <-> text layer, 0-based): {pairs}",
        "parameters: " + ", ".join(f"{role} {n / 1e6:.2f} M" for role, n in roles.items()),
    ])
