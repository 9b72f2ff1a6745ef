"""ITM-only fusion learning on cached (frozen) parser tokens. usage: fast.py NAME STEPS [k=v]"""
import sys, json, time, os
import numpy as np, torch, torch.nn.functional as F
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.tokenization import build_tokenizer, special_ids, encode_texts
torch.set_num_threads(int(os.environ.get("T", "1")))
name, steps = sys.argv[1], int(sys.argv[2])
opts = dict(a.split("=", 1) for a in sys.argv[3:])
g = lambda k, d: type(d)(opts.get(k, d))
torch.manual_seed(g("seed", 0))
over = ["model.text.tokenizer=/work/main/.devdata/bert-tok", f"model.text.num_layers={g('layers',2)}",
        f"model.text.initializer_range={g('std',0.08)}"] + [v for k, v in opts.items() if k.startswith("cfg")]
cfg = load_config("quickstart", over)
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
model = VisualParsingModel(cfg.model, ids["vocab_size"], ids["cls"], ids["sep"])
model.load_pretrained()
if "textinit" in opts:
    from safetensors.torch import load_file
    print(model.load_state_dict(load_file(opts["textinit"]), strict=False).unexpected_keys)
man = load_manifest("/tmp/exp/world/manifest.json")
tr = read_pretrain_records(man, g("sets", "coco,vg").split(","), ["train", "restval"])
va = read_pretrain_records(man, ["coco"], ["val"])[:300]
recs = tr + va; ntr_ = len(tr)
_all = read_pretrain_records(man, ["coco", "vg"], ["train", "restval"]) + va
paths = sorted({r.image_path for r in _all}); pidx = {p: i for i, p in enumerate(paths)}
cache = "/tmp/s6/tok_shipped.pt"
if os.path.exists(cache):
    feats = torch.load(cache)
else:
    imgs = torch.load("/tmp/s5/imgs_96.pt")
    model.eval()
    with torch.no_grad():
        feats = torch.cat([model.encode_image(imgs[i:i+256]).tokens for i in range(0, len(imgs), 256)])
    torch.save(feats, cache)
rimg = torch.tensor([pidx[r.image_path] for r in recs])
if "tok" in opts:
    import re as _re
    from vlparse.data.synthetic.scenes import sample_scene, COLORS, SHAPES, SIZES
    cols, shps, szs = list(COLORS), list(SHAPES), list(SIZES)
    orc = torch.zeros(len(paths), 36, feats.shape[-1])
    for k, pth in enumerate(paths):
        idx = int(_re.findall(r"(\d+)\.jpg", str(pth))[0]) - 1
        sc = sample_scene(np.random.default_rng([0, idx, 0]), 128)
        orc[k, :, 16] = 1.0
        for o in sc.objects:
            cell = min(5, int(o.cy / 128 * 6)) * 6 + min(5, int(o.cx / 128 * 6))
            orc[k, cell, 16] = 0
            orc[k, cell, cols.index(o.color)] = 1
            orc[k, cell, 8 + shps.index(o.shape)] = 1
            orc[k, cell, 14 + szs.index(o.size)] = 1
    if opts["tok"] == "oracle":
        feats = orc
    else:  # least-squares map of real tokens to the oracle code, fit on the training images
        tr_img = torch.unique(rimg[:ntr_])
        X = feats[tr_img].reshape(-1, feats.shape[-1]); Y = orc[tr_img, :, :17].reshape(-1, 17)
        X1 = torch.cat([X, torch.ones(len(X), 1)], 1)
        W = torch.linalg.solve(X1.T @ X1 + 1e-2 * torch.eye(X1.shape[1]), X1.T @ Y)
        Xa = torch.cat([feats.reshape(-1, feats.shape[-1]), torch.ones(feats.shape[0] * 36, 1)], 1)
        P = (Xa @ W).reshape(feats.shape[0], 36, 17)
        print("sym fit R2 train", 1 - ((X1 @ W - Y) ** 2).sum().item() / ((Y - Y.mean(0)) ** 2).sum().item(), flush=True)
        feats = torch.zeros_like(feats); feats[..., :17] = P
texts = [r.captions for r in recs]
flat = [x for t in texts for x in t]
ii, am = encode_texts(tok, flat, 16)
import re
words = [frozenset(re.findall(r"[a-z]+", x.lower())) for x in flat]
start = torch.tensor(np.cumsum([0] + [len(t) for t in texts])[:-1]); cnt = torch.tensor([len(t) for t in texts])
N = len(recs); ntr = len(tr)
lr = g("lr", 3e-4)
for p in model.visual.parameters(): p.requires_grad_(False)
groups = model.param_groups(lr, 0.0, 0.01)
mode = g("mode", "cls")
extra = torch.nn.ModuleDict()
D = cfg.model.text.hidden_size
if mode == "bag":
    extra["mlp"] = torch.nn.Sequential(torch.nn.Linear(2 * D, 512), torch.nn.GELU(), torch.nn.Linear(512, 2))
if mode == "bil":
    extra["bil"] = torch.nn.Bilinear(D, D, 2)
if extra: groups.append({"params": list(extra.parameters()), "lr": lr, "weight_decay": 0.0})
opt = torch.optim.AdamW(groups, fused=True)
base = [gr["lr"] for gr in opt.param_groups]
B = g("bs", 16)
gen = torch.Generator().manual_seed(1)
def batch(lo, hi, b):
    r = torch.randint(lo, hi, (b,), generator=gen)
    pos = start[r, None] + (torch.rand(b, 2, generator=gen) * cnt[r, None]).long()
    oth = torch.randint(lo, hi - 1, (b, 2), generator=gen); oth += (oth >= r[:, None]).long()
    neg = start[oth] + (torch.rand(b, 2, generator=gen) * cnt[oth]).long()
    if opts.get("inb") and lo == 0:
        from scipy.optimize import linear_sum_assignment
        for sl in range(2):
            if opts["inb"] == "rand":
                S = torch.rand(b, b, generator=gen).numpy()
            else:
                S = np.zeros((b, b))
                for i in range(b):
                    for j in range(b):
                        p, q = words[pos[i, sl]], words[pos[j, sl]]
                        S[i, j] = len(p & q) / len(p | q)
                        if flat[pos[j, sl]].lower() in {flat[c].lower() for c in range(start[r[i]], start[r[i]] + cnt[r[i]])}:
                            S[i, j] = -9
                if opts["inb"] == "soft":
                    S = S + torch.rand(b, b, generator=gen).numpy() * float(opts.get("noise", 0.5))
            np.fill_diagonal(S, -1e9)
            ri, ci = linear_sum_assignment(-S)
            neg[ri, sl] = pos[ci, sl]
    K = g("hard", 0)
    if K and lo == 0:
        oth = torch.randint(lo, hi - 1, (b, 2, K), generator=gen); oth += (oth >= r[:, None, None]).long()
        cand = start[oth] + (torch.rand(b, 2, K, generator=gen) * cnt[oth]).long()
        nh = g("nhard", 2)
        for i in range(b):
            for s in range(2 - nh, 2):
                p = words[pos[i, s]]
                best, bj = -1.0, None
                for c in cand[i, s].tolist():
                    if flat[c].lower() == flat[pos[i, s]].lower():
                        continue
                    q = words[c]; j = len(p & q) / len(p | q)
                    if j > best: best, bj = j, c
                if bj is not None: neg[i, s] = bj
    return r, torch.cat([pos, neg], 1).reshape(-1), torch.tensor([1, 1, 0, 0]).repeat(b)
def forward(r, t):
    tokens = feats[rimg[r]].repeat_interleave(4, 0)
    if mode in ("bag", "bil"):
        v = tokens.mean(1) if opts.get("raw") else model.visual_embed(tokens, model.text_embed.type_embedding(1)).mean(1)
        w = model.text_embed(ii[t]); m = am[t][..., None].float()
        w = (w * m).sum(1) / m.sum(1)
        return extra["mlp"](torch.cat([v, w], -1)) if mode == "bag" else extra["bil"](v, w)
    out = model.fuse(tokens, ii[t], am[t])
    h = out.last_hidden_state
    if mode == "mean":
        return model.itm_head(h.mean(1))
    return model.itm_head(out.cls)
t0 = time.time(); accs = []
for step in range(1, steps + 1):
    f = min(1.0, step / 50)
    for gr, b0 in zip(opt.param_groups, base): gr["lr"] = b0 * f
    model.train()
    r, t, lab = batch(0, ntr, B)
    logits = forward(r, t)
    loss = F.cross_entropy(logits, lab)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    accs.append((logits.argmax(-1) == lab).float().mean().item())
    if step % 100 == 0:
        model.eval()
        with torch.no_grad():
            vs = []
            for _ in range(4):
                r, t, lab = batch(ntr, N, 64)
                vs.append((forward(r, t).argmax(-1) == lab).float().mean().item())
        print(json.dumps({"step": step, "s": round(time.time() - t0), "train": round(np.mean(accs[-100:]), 3), "val": round(np.mean(vs), 3)}), flush=True)
