"""One quickstart step (16 images, one thread) with the masked pass (MLM weight 1) and without it
(weight 0, the steps of objectives.mlm_delay), alternated 12 times; medians of 2-step timings.
Run from the repository root: OMP_NUM_THREADS=1 python step_cost.py (paths of QS=/tmp/s8/qsF)."""
import time, sys, torch, os
from functools import partial
torch.set_num_threads(1)
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import PretrainDataset
from vlparse.data.collate import collate_pretrain
from vlparse.data.tokenization import build_tokenizer, special_ids
from vlparse.data.synthetic.truth import SceneTruth
from vlparse.tasks.pretrain import pretrain_losses
cfg = load_config("quickstart", ["model.text.tokenizer=/tmp/s8/qsF/tokenizer"] + sys.argv[1:])
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
model = VisualParsingModel(cfg.model, ids["vocab_size"], cls_token_id=ids["cls"], sep_token_id=ids["sep"])
model.load_pretrained()
man = load_manifest("/tmp/s8/qsF/world/manifest.json")
recs = read_pretrain_records(man, cfg.data.train_sets, cfg.data.train_splits)
truth = SceneTruth.from_manifest(man)
o = cfg.objectives
ds = PretrainDataset(recs, tok, cfg.model.visual.image_size, cfg.model.text.max_text_len, model.num_visual_tokens, o.num_pos, o.num_neg, o.mlm_prob, 0, truth=truth)
t=time.perf_counter()
for k in range(5): batch = collate_pretrain([ds[i+16*k] for i in range(16)], negatives="batch", num_pos=2, group=8, may_describe=ds.may_describe)
print("data 16 items", (time.perf_counter()-t)/5)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
W = 1.0
def step():
    l = pretrain_losses(model, batch, o, mlm_weight=W)
    opt.zero_grad(); l.loss.backward(); opt.step()
import statistics
for _ in range(3): step()
res={0:[],1:[]}
for r in range(12):
    for w in (1.0,0.0):
        W=w; t=time.perf_counter(); step(); step(); res[int(w)].append((time.perf_counter()-t)/2)
print("median W=1", statistics.median(res[1]), "W=0", statistics.median(res[0]))
