import torch
from sklearn.linear_model import LogisticRegression
from vlparse.config import load_config
from vlparse.models.visual import build_visual_embedder
torch.set_num_threads(2); torch.manual_seed(0)
X, Y = torch.load("/tmp/s4/pp_4000.pt")
cfg = load_config("quickstart", [])
vis = build_visual_embedder(cfg.model.visual).eval()
feats = {}
with torch.no_grad():
    m = vis.model
    x = X[:2000]
    pe = m.patch_embed(x)  # NHWC
    feats["patch_embed_max"] = pe.flatten(1, 2).amax(1)
    h = pe
    for i, layer in enumerate(m.layers):
        h = layer(h)
        feats[f"stage{i}_max"] = h.flatten(1, 2).amax(1)
        feats[f"stage{i}_mean"] = h.flatten(1, 2).mean(1)
    feats["final_max"] = m.norm(h).flatten(1, 2).amax(1)
    feats["pixels_hist"] = torch.stack([torch.histc(x[i].permute(1,2,0).reshape(-1,3)[:, 0], 8) for i in range(1)])[:0]
for k, f in feats.items():
    if f.numel() == 0: continue
    accs = []
    for c in range(8):
        clf = LogisticRegression(max_iter=500).fit(f[:1500].numpy(), Y[:1500, c].numpy())
        accs.append(clf.score(f[1500:].numpy(), Y[1500:2000, c].numpy()))
    print(k, tuple(f.shape), "colour acc", round(sum(accs) / 8, 3))
