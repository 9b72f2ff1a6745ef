"""ITM in one process with plain AdamW (lr 3e-4 on every parameter, no warm-up, no role
multipliers): fiber_quickstart, ITC + ITM on random negatives, MLM off, with the linear ITM head
or an MLP in its place. Prints the mean ITM loss and accuracy of every 50 steps.

    python itm_head_ab.py MANIFEST linear|mlp STEPS [key=value ...]
"""

import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from vlparse.config import load_config
from vlparse.tasks.pretrain import PretrainTask
from vlparse.train.protocol import StepContext


def main(manifest: str, head: str, steps: int, extra: list[str]) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = load_config("fiber_quickstart", [
        "train.batch_size=32", "data.num_workers=0", "train.progress=false",
        "objectives.lambda_mlm=0", "objectives.itm_negatives=random", *extra])
    task = PretrainTask(cfg, manifest, log=None)
    data = task.train_dataset()
    model = task.build_model()
    model.train()
    if head == "mlp":
        h = model.itm_head.fc.in_features
        model.itm_head.fc = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=task.collate)
    step, t0, seen = 0, time.time(), []
    while step < steps:
        for batch in loader:
            out = task.step(model, batch, StepContext(step, lambda t: t))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            c = out.counts
            acc = float(c["itm_correct"]) / float(c["itm_total"])
            seen.append((float(out.scalars["itm"]), acc))
            step += 1
            if step % 50 == 0:
                loss = sum(x for x, _ in seen[-50:]) / 50
                acc = sum(y for _, y in seen[-50:]) / 50
                print(head, step, round(loss, 4), round(acc, 4), round(time.time() - t0),
                      flush=True)
            if step >= steps:
                break


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
