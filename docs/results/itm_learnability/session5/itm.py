"""Real-image ITM learnability with the vlparse model. usage: toy2.py NAME STEPS [k=v]"""
import sys, json, time, os
import numpy as np, torch, torch.nn.functional as F
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.images import load_image
from vlparse.data.transforms import image_transform
from vlparse.data.tokenization import build_tokenizer, special_ids, encode_texts
torch.set_num_threads(int(os.environ.get("T", "1")))
name, steps = sys.argv[1], int(sys.argv[2])
opts = dict(a.split("=", 1) for a in sys.argv[3:])
g = lambda k, d: type(d)(opts.get(k, d))
torch.manual_seed(g("seed", 0))
over = ["model.text.tokenizer=/work/main/.devdata/bert-tok", f"model.text.num_layers={g('layers',4)}",
        f"model.text.initializer_range={g('std',0.08)}"] + [v for k, v in opts.items() if k.startswith("cfg")]
if "swin" in opts:
    import vlparse.models.visual.swin_parser as SP
    _orig = SP._timm_kwargs
    def _kw(c):
        k = _orig(c)
        if opts["swin"] == "p16": k.update(patch_size=16, embed_dim=128, depths=(2,), num_heads=(4,))
        if opts["swin"] == "p16d3": k.update(patch_size=16, embed_dim=128, depths=(3,), num_heads=(4,))
        if opts["swin"] == "p8": k.update(patch_size=8, embed_dim=64, depths=(2, 2), num_heads=(2, 4))
        return k
    SP._timm_kwargs = _kw
cfg = load_config(g("config", "quickstart"), over)
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
model = VisualParsingModel(cfg.model, ids["vocab_size"], ids["cls"], ids["sep"])
man = load_manifest("/tmp/exp/world/manifest.json")
cache = "/tmp/s5/imgs_%d.pt" % cfg.model.visual.image_size
tr = read_pretrain_records(man, g("sets", "coco,vg").split(","), ["train", "restval"])
va = read_pretrain_records(man, ["coco"], ["val"])[:300]
recs = tr + va
paths = sorted({r.image_path for r in recs})
pidx = {p: i for i, p in enumerate(paths)}
if os.path.exists(cache):
    imgs = torch.load(cache)
else:
    tf = image_transform(cfg.model.visual.image_size)
    imgs = torch.stack([tf(load_image(p)) for p in paths]); torch.save(imgs, cache)
rimg = torch.tensor([pidx[r.image_path] for r in recs])
texts = [r.captions for r in recs]
flat = [x for t in texts for x in t]
ii, am = encode_texts(tok, flat, 16)
start = torch.tensor(np.cumsum([0] + [len(t) for t in texts])[:-1]); cnt = torch.tensor([len(t) for t in texts])
N = len(recs); ntr = len(tr)
lr, vlr = g("lr", 3e-4), g("vlr", 3e-5)
if "init" in opts:
    print(model.visual.load_pretrained(opts["init"]))
groups = model.param_groups(lr, vlr, 0.01)
opt = torch.optim.AdamW(groups, fused=True)
base = [gr["lr"] for gr in opt.param_groups]
B = g("bs", 16)
gen = torch.Generator().manual_seed(1)
def batch(lo, hi, b):
    r = torch.randint(lo, hi, (b,), generator=gen)
    pos = start[r, None] + (torch.rand(b, 2, generator=gen) * cnt[r, None]).long()
    oth = torch.randint(lo, hi - 1, (b, 2), generator=gen); oth += (oth >= r[:, None]).long()
    neg = start[oth] + (torch.rand(b, 2, generator=gen) * cnt[oth]).long()
    return r, torch.cat([pos, neg], 1).reshape(-1), torch.tensor([1, 1, 0, 0]).repeat(b)
def forward(r, t):
    tokens = model.encode_image(imgs[rimg[r]]).tokens
    out = model.fuse(tokens.repeat_interleave(4, 0), ii[t], am[t])
    return model.itm_head(out.cls), tokens
from vlparse.objectives import itc as itcmod
def itc_term(r, t, tokens):
    tp = t.view(-1, 4)[:, :2].reshape(-1)
    text = model.itc_head.text(model.text_embed.word_embeddings(ii[tp]), am[tp])
    image = model.itc_head.image(tokens)
    owner = torch.arange(len(r)).repeat_interleave(2)
    return itcmod.itc_loss(image, text, owner, 0.07)
t0 = time.time(); accs = []
for step in range(1, steps + 1):
    f = min(1.0, step / 50)
    for gr, b0 in zip(opt.param_groups, base): gr["lr"] = b0 * f
    model.train()
    r, t, lab = batch(0, ntr, B)
    logits, tokens = forward(r, t)
    loss = F.cross_entropy(logits, lab)
    if g("itc", 0.0) > 0: loss = loss + g("itc", 0.0) * itc_term(r, t, tokens)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    accs.append((logits.argmax(-1) == lab).float().mean().item())
    if step % 100 == 0:
        model.eval()
        with torch.no_grad():
            vs = []
            for _ in range(4):
                r, t, lab = batch(ntr, N, 64)
                vs.append((forward(r, t)[0].argmax(-1) == lab).float().mean().item())
        print(json.dumps({"step": step, "s": round(time.time() - t0), "train": round(np.mean(accs[-100:]), 3), "val": round(np.mean(vs), 3), "spread": round(tokens.detach().std(0).mean().item(), 3)}), flush=True)
