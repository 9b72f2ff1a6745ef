"""FP8 matrix products in training, as an option: torchao's float8 training swaps the
``nn.Linear`` layers of a model for layers whose forward and backward products run in FP8 on
GPUs that have FP8 tensor cores (Hopper and later), with dynamic scaling.

torchao is an optional dependency (``pip install torchao``; torchao 0.18 goes with torch 2.11);
without it :func:`convert_to_float8` raises :class:`~vlparse.errors.OptionalDependencyError`.
Layers whose sizes are not multiples of 16 (what FP8 products need) and the output heads stay in
the autocast precision. Whether the loss stays within a tolerance of bf16 is measured on the GPU
by ``benchmarks/gpu_evidence.py`` (a 200-step comparison).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from vlparse.errors import OptionalDependencyError

__all__ = ["DEFAULT_SKIP", "convert_to_float8", "float8_available"]

DEFAULT_SKIP = ("mlm_head", "itm_head", "mfr_head", "head")
"""Module names (prefixes) left in the autocast precision: the output heads."""


def float8_available() -> bool:
    """Whether torchao's float8 training can be imported."""
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return False
    return True


def convert_to_float8(model: nn.Module, recipe: str = "tensorwise",
                      skip: Sequence[str] = DEFAULT_SKIP) -> list[str]:
    """Swap the ``nn.Linear`` layers of ``model`` for torchao's FP8 training layers, in place.

    Args:
        model: the model (before ``torch.compile``, which fuses the scaling into the products).
        recipe: torchao's recipe name: ``"tensorwise"`` (one scale per tensor, fastest) or
            ``"rowwise"`` (one per row, closer to bf16).
        skip: names (prefixes) of modules to leave alone.

    Returns:
        The names of the converted layers.

    Raises:
        OptionalDependencyError: torchao is not installed.
    """
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as e:
        raise OptionalDependencyError(
            f"FP8 training needs torchao, which is not installed ({e}); install it with "
            "`pip install torchao` (torchao 0.18 for torch 2.11), or train without FP8"
        ) from e
    converted: list[str] = []

    def keep(module: nn.Module, name: str) -> bool:
        ok = (type(module) is nn.Linear and module.in_features % 16 == 0
              and module.out_features % 16 == 0
              and not any(name == s or name.startswith(f"{s}.") for s in skip))
        if ok:
            converted.append(name)
        return ok

    config = Float8LinearConfig.from_recipe_name(recipe)
    convert_to_float8_training(model, config=config, module_filter_fn=keep)
    return converted
