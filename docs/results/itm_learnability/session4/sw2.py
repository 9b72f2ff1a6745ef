import sys, torch, torch.nn.functional as F, time, timm
torch.set_num_threads(1); torch.manual_seed(0)
lr = float(sys.argv[1]); variant = sys.argv[2]; steps = int(sys.argv[3])
X, Y = torch.load("/tmp/s4/pp_4000.pt")
kw = dict(num_classes=0, img_size=96, window_size=6, drop_path_rate=0.0)
if variant == "tiny": kw.update(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8))
if variant == "p8": kw.update(patch_size=8, embed_dim=64, depths=(2, 2), num_heads=(2, 4))
if variant == "p8d1": kw.update(patch_size=8, embed_dim=64, depths=(1, 2), num_heads=(2, 4))
if variant == "p16": kw.update(patch_size=16, embed_dim=128, depths=(2,), num_heads=(4,))
m = timm.create_model("swin_tiny_patch4_window7_224", **kw)
dim = m.num_features
head = torch.nn.Linear(dim, Y.shape[1])
opt = torch.optim.AdamW(list(m.parameters()) + list(head.parameters()), lr, weight_decay=0.05)
def f(x):
    t = m.forward_features(x).flatten(1, 2)
    return head(t).amax(1), t.shape[1]
t0 = time.time()
for s in range(1, steps + 1):
    for g in opt.param_groups: g["lr"] = lr * min(1, s / 30) * (0.5 + 0.5 * __import__("math").cos(3.14159 * s / steps))
    idx = torch.randint(0, 3600, (64,))
    l = F.binary_cross_entropy_with_logits(f(X[idx])[0], Y[idx]); opt.zero_grad(); l.backward(); opt.step()
    if s % 250 == 0:
        with torch.no_grad():
            p, n = f(X[3600:3900]); acc = ((p > 0) == (Y[3600:3900] > 0)).float()
        print(sys.argv[1:], n, s, round(time.time()-t0), round(l.item(), 3), "color", round(acc[:, :8].mean().item(), 3), "shape", round(acc[:, 8:14].mean().item(), 3), flush=True)

torch.save(m.state_dict(), f"/tmp/s4/parser_{variant}_{steps}.pt")
