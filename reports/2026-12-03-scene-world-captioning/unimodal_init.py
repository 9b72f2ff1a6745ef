"""Save fiber_tiny as pre-training starts it (its unimodal initialisation: the bundled MiniLM
text backbone, a random Swin), with no vision-language pre-training: the "without
pre-training" starting point of the caption comparison.

    python reports/2026-12-03-scene-world-captioning/unimodal_init.py OUT_FOLDER
"""

from __future__ import annotations

import sys

from vlparse.config import load_config
from vlparse.models.fiber import FiberModel, FiberProcessor
from vlparse.utils import seed_everything


def main(out: str) -> None:
    seed_everything(0)
    cfg = load_config("fiber_tiny").model
    model = FiberModel(cfg)
    for name, report in model.load_pretrained().items():
        print(f"{name}: {report}")
    model.save_pretrained(out, FiberProcessor.from_config(cfg))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
