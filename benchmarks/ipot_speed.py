"""IPOT transport plan: log-domain against plain-domain scaling on a quickstart-sized batch.

    python benchmarks/ipot_speed.py --out results.json

Shapes: 64 pairs (16 images x 4 texts), 24 text tokens (15 real) x 36 visual tokens, width 128,
50 IPOT steps, on the CPU. Reports the median of ``--repeats`` timings of each and their ratio,
and the largest difference between the two plans. ``--out`` gets a ``results.json`` of
``reports/results.schema.json`` (see ``reports/2026-11-22-ipot-speed/``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import write_results  # noqa: E402

from vlparse.objectives import ot  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="results.json to write")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    x, y = torch.randn(64, 24, 128), torch.randn(64, 36, 128)
    x_mask = torch.ones(64, 24, dtype=torch.bool)
    x_mask[:, 15:] = False
    y_mask = torch.ones(64, 36, dtype=torch.bool)
    cost = ot.cosine_cost(x, y)
    times, plans = {}, {}
    for name, log_domain in (("log_domain", True), ("plain_domain", False)):
        plans[name] = ot.ipot(cost, x_mask, y_mask, log_domain=log_domain)  # warm-up
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            ot.ipot(cost, x_mask, y_mask, log_domain=log_domain)
            runs.append(time.perf_counter() - t)
        times[name] = statistics.median(runs)
    result = {
        "median_s": times,
        "speedup": times["log_domain"] / times["plain_domain"],
        "max_plan_difference": float((plans["log_domain"] - plans["plain_domain"]).abs().max()),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    write_results(args.out, script=__file__, topic="ipot-speed", device="cpu", results=result,
                  question="How much faster is IPOT in the plain domain than in the log domain on "
                  "a quickstart-sized batch, and do the plans agree?", argv=argv)
    return result


if __name__ == "__main__":
    main()
