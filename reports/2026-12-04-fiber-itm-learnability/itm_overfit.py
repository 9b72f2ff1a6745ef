"""Can fiber_quickstart fit ITM on one fixed batch? ITM alone, random negatives (fixed by the
batch's per-item noise), AdamW, one thread. Usage: python itm_overfit.py MANIFEST [GATE] [LR]"""

import sys

import torch

from vlparse.config import load_config
from vlparse.tasks.pretrain import PretrainTask
from vlparse.train.protocol import StepContext

torch.manual_seed(0)
torch.set_num_threads(1)
manifest, gate = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0.1"
lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
cfg = load_config("fiber_quickstart", [
    "train.batch_size=16", "data.num_workers=0", "train.progress=false",
    "objectives.lambda_itc=0", "objectives.lambda_mlm=0", "objectives.itm_negatives=random",
    f"model.fusion.gate_init={gate}"])
task = PretrainTask(cfg, manifest, log=None)
data = task.train_dataset()
batch = task.collate([data[i] for i in range(16)])
model = task.build_model()
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=lr)
for step in range(151):
    out = task.step(model, batch, StepContext(0, lambda t: t))
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    if step % 15 == 0:
        c = out.counts
        print(step, round(float(out.scalars["itm"]), 4),
              round(float(c["itm_correct"]) / float(c["itm_total"]), 4), flush=True)
