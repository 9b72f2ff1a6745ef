"""Optimizer parameter groups by module role (not by substrings of parameter names)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

__all__ = ["role_param_groups"]


def role_param_groups(
    roles: Sequence[tuple[str, Sequence[nn.Module]]],
    model: nn.Module,
    no_decay: set[int],
    lr: float,
    weight_decay: float,
    lr_mult: Mapping[str, float],
) -> list[dict]:
    """AdamW groups: each role split into ``{role}_decay`` and ``{role}_no_decay``.

    Args:
        roles: ``(role, modules)`` in order of precedence: a parameter shared by two roles (a
            tied weight) belongs to the first that holds it.
        model: the whole model; every trainable parameter of it must belong to a role.
        no_decay: ``id`` of the 2-D parameters without weight decay (position tables); biases,
            norm weights, gates and other parameters of at most one dimension never decay.
        lr: base learning rate; a role's is ``lr * lr_mult[role]``.
        weight_decay: of the decay groups.

    Returns:
        Non-empty groups, each ``{"name", "params", "lr", "weight_decay"}``.

    Raises:
        RuntimeError: a trainable parameter has no role (a module the roles do not list).
    """
    seen: set[int] = set()
    groups: list[dict] = []
    for role, modules in roles:
        decay, keep = [], []
        for module in modules:
            for p in module.parameters():
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                (keep if p.ndim <= 1 or id(p) in no_decay else decay).append(p)
        rate = lr * lr_mult[role]
        for suffix, params, wd in (("decay", decay, weight_decay), ("no_decay", keep, 0.0)):
            if params:
                groups.append(
                    {"name": f"{role}_{suffix}", "params": params, "lr": rate, "weight_decay": wd}
                )
    orphans = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if orphans:
        raise RuntimeError(f"parameters without a role: {orphans[:5]}")
    return groups
