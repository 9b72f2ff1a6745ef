"""Save a FIBER model as its pre-training starts it (the configured backbones' weights, gates at
their initial value, no vision-language pre-training): the "without pre-training" start of the
caption comparison. Extra arguments are config overrides (e.g. the pruned tokenizer).

    python reports/2026-12-04-scene-world-captioning/unimodal_init.py OUT CONFIG [key=value ...]
"""

from __future__ import annotations

import sys

from vlparse.config import load_config
from vlparse.models.fiber import FiberModel, FiberProcessor
from vlparse.utils import seed_everything


def main(out: str, config: str, overrides: list[str]) -> None:
    seed_everything(0)
    cfg = load_config(config, overrides).model
    model = FiberModel(cfg)
    for name, report in model.load_pretrained().items():
        print(f"{name}: {report}")
    model.save_pretrained(out, FiberProcessor.from_config(cfg))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
