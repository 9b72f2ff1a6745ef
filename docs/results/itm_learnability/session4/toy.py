"""Toy ITM learnability: symbolic scene tokens + scene-world captions, vlparse fusion model.
usage: toy.py NAME STEPS [opts as k=v]"""
import sys, json, time, math, os
import numpy as np, torch, torch.nn.functional as F
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.data.synthetic.scenes import sample_scene, COLORS, SHAPES, SIZES, BACKGROUNDS
from vlparse.data.synthetic.language import captions, regions
from vlparse.data.tokenization import build_tokenizer, special_ids, encode_texts
torch.set_num_threads(int(os.environ.get("T", "1")))
name, steps = sys.argv[1], int(sys.argv[2])
opts = dict(a.split("=", 1) for a in sys.argv[3:])
g = lambda k, d: type(d)(opts.get(k, d))
torch.manual_seed(g("seed", 0))
N = g("n", 3000); L = 16
cfg = load_config("quickstart", ["model.text.tokenizer=/work/main/.devdata/bert-tok",
                                 f"model.text.num_layers={g('layers',4)}",
                                 f"model.text.initializer_range={g('std',0.08)}"])
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
model = VisualParsingModel(cfg.model, ids["vocab_size"], ids["cls"], ids["sep"])
C = model.visual.out_dim
cols, shps, szs = list(COLORS), list(SHAPES), list(SIZES)
scn = [sample_scene(np.random.default_rng([0, i, 0]), 128) for i in range(N)]
vis = torch.zeros(N, 36, C)
texts = []
for i, sc in enumerate(scn):
    vis[i, :, 16] = 1.0
    for o in sc.objects:
        cell = min(5, int(o.cy / 128 * 6)) * 6 + min(5, int(o.cx / 128 * 6))
        vis[i, cell, 16] = 0
        vis[i, cell, cols.index(o.color)] = 1
        vis[i, cell, 8 + shps.index(o.shape)] = 1
        vis[i, cell, 14 + szs.index(o.size)] = 1
    rng = np.random.default_rng([0, i, 1])
    kinds = g("texts", "cap,vg").split(",")
    t = []
    if "cap" in kinds: t += [c for c, _ in captions(sc, rng)]
    if "vg" in kinds: t += [r for r, _ in regions(sc, rng)]
    texts.append(t)
flat = [x for t in texts for x in t]
owner = torch.tensor([i for i, t in enumerate(texts) for _ in t])
ii, am = encode_texts(tok, flat, L)
start = torch.tensor(np.cumsum([0] + [len(t) for t in texts])[:-1]); cnt = torch.tensor([len(t) for t in texts])
ntr = N - 300
lr = g("lr", 3e-4)
params = [p for n_, p in model.named_parameters() if not n_.startswith("visual.")]
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
B = g("bs", 16)
gen = torch.Generator().manual_seed(1)
def batch(lo, hi, b):
    img = torch.randint(lo, hi, (b,), generator=gen)
    pos = start[img, None] + (torch.rand(b, 2, generator=gen) * cnt[img, None]).long()
    oth = torch.randint(lo, hi - 1, (b, 2), generator=gen); oth += (oth >= img[:, None]).long()
    neg = start[oth] + (torch.rand(b, 2, generator=gen) * cnt[oth]).long()
    t = torch.cat([pos, neg], 1).reshape(-1)
    lab = torch.tensor([1, 1, 0, 0]).repeat(b)
    return img, t, lab
def forward(img, t):
    out = model.fuse(vis[img].repeat_interleave(4, 0), ii[t], am[t])
    pool = g("pool", "cls")
    h = out.cls
    return model.itm_head(h)
t0 = time.time(); accs = []
for step in range(1, steps + 1):
    f = min(1.0, step / 50)
    for gr in opt.param_groups: gr["lr"] = lr * f
    img, t, lab = batch(0, ntr, B)
    logits = forward(img, t)
    loss = F.cross_entropy(logits, lab)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    accs.append((logits.argmax(-1) == lab).float().mean().item())
    if step % 100 == 0:
        with torch.no_grad():
            img, t, lab = batch(ntr, N, 256)
            va = (forward(img, t).argmax(-1) == lab).float().mean().item()
        print(json.dumps({"step": step, "s": round(time.time() - t0), "train": round(np.mean(accs[-100:]), 3), "val": round(va, 3)}), flush=True)
