"""Time fwd+bwd of one pre-training step for config overrides: prof.py k=v ..."""
import sys, time, torch
from vlparse.config import load_config
from vlparse.data import read_pretrain_records
from vlparse.data.collate import collate_pretrain
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import PretrainDataset
from vlparse.data.tokenization import build_tokenizer, special_ids
from vlparse.models.single_stream import VisualParsingModel
from vlparse.tasks.pretrain import pretrain_losses
torch.set_num_threads(int(__import__('os').environ.get('T','1')))
cfg = load_config("quickstart", sys.argv[1:])
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
torch.manual_seed(0)
model = VisualParsingModel(cfg.model, ids["vocab_size"], ids["cls"], ids["sep"])
o = cfg.objectives
recs = read_pretrain_records(load_manifest("/tmp/exp/world/manifest.json"), cfg.data.train_sets, cfg.data.train_splits)
ds = PretrainDataset(recs, tok, image_size=cfg.model.visual.image_size, max_text_len=cfg.model.text.max_text_len,
    num_visual_tokens=model.num_visual_tokens, num_pos=o.num_pos, num_neg=o.num_neg, mlm_prob=o.mlm_prob, seed=0,
    mlm_all=o.itm_pass == "shared")
B = cfg.train.batch_size
batches = [collate_pretrain([ds[i * B + j] for j in range(B)]) for i in range(4)]
t=time.perf_counter(); [collate_pretrain([ds[i * B + j] for j in range(B)]) for i in range(2)]; tdata=(time.perf_counter()-t)/2
opt = torch.optim.AdamW(model.parameters(), 1e-4)
def step(b):
    l = pretrain_losses(model, b, o); opt.zero_grad(); l.loss.backward(); opt.step()
step(batches[0])
ts=[]
for b in batches[1:]:
    t=time.perf_counter(); step(b); ts.append(time.perf_counter()-t)
# parts
with torch.no_grad():
    t=time.perf_counter(); model.encode_image(batches[0]["image"]); tv=time.perf_counter()-t
print(f"{' '.join(sys.argv[1:])}: step {min(ts):.3f}s  data {tdata:.3f}s  parser-fwd {tv:.3f}s  params {sum(p.numel() for p in model.parameters())/1e6:.2f}M")
if __import__('os').environ.get('PROF'):
    from torch.profiler import profile
    with profile() as p:
        for b in batches[1:3]: step(b)
    print(p.key_averages().table(sort_by="cpu_time_total", row_limit=35))
