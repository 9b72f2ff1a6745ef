"""Save a FIBER model as its pre-training starts it (the configured backbones' weights, gates at
their initial value), with no vision-language pre-training: the "without pre-training" start of
the caption comparisons. CONFIG defaults to fiber_tiny (its bundled MiniLM text backbone and a
random Swin); further arguments are config overrides (e.g. a pruned tokenizer).

    python reports/2026-12-03-scene-world-captioning/unimodal_init.py OUT [CONFIG [key=value ...]]
"""

from __future__ import annotations

import sys

from vlparse.config import load_config
from vlparse.models.fiber import FiberModel, FiberProcessor
from vlparse.utils import seed_everything


def main(out: str, config: str = "fiber_tiny", overrides: list[str] | None = None) -> None:
    seed_everything(0)
    cfg = load_config(config, overrides or []).model
    model = FiberModel(cfg)
    for name, report in model.load_pretrained().items():
        print(f"{name}: {report}")
    model.save_pretrained(out, FiberProcessor.from_config(cfg))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:3], overrides=sys.argv[3:])
