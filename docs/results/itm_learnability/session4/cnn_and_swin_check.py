import torch, torch.nn.functional as F
from vlparse.config import load_config
from vlparse.models.visual import build_visual_embedder
torch.set_num_threads(2)
X, Y = torch.load("/tmp/s4/pp_4000.pt")
print("X", X.shape, X.mean().item(), X.std().item(), X[:8].std(0).mean().item())
print("Y prior", Y.mean(0)[:14])
cfg = load_config("quickstart", [])
vis = build_visual_embedder(cfg.model.visual)
print(type(vis), sum(p.numel() for p in vis.parameters()), all(p.requires_grad for p in vis.parameters()))
t = vis(X[:32]).tokens
print("tokens", t.shape, t.std(0).mean().item(), t.std(1).mean().item())
head = torch.nn.Linear(t.shape[-1], Y.shape[1])
loss = F.binary_cross_entropy_with_logits(head(t).amax(1), Y[:32]); loss.backward()
for n, p in list(vis.named_parameters())[:5] + list(vis.named_parameters())[-5:]:
    print(n, p.grad.norm().item() if p.grad is not None else None)
# simple CNN baseline
cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 4, 4), torch.nn.GELU(), torch.nn.Conv2d(32, 64, 2, 2), torch.nn.GELU(), torch.nn.Conv2d(64, 128, 2, 2), torch.nn.GELU())
h2 = torch.nn.Linear(128, Y.shape[1])
opt = torch.optim.AdamW(list(cnn.parameters()) + list(h2.parameters()), 1e-3)
for s in range(300):
    idx = torch.randint(0, 3600, (64,))
    f = cnn(X[idx]).flatten(2).transpose(1, 2)
    l = F.binary_cross_entropy_with_logits(h2(f).amax(1), Y[idx]); opt.zero_grad(); l.backward(); opt.step()
    if s % 50 == 49:
        with torch.no_grad():
            p = h2(cnn(X[3600:]).flatten(2).transpose(1, 2)).amax(1)
            acc = ((p > 0) == (Y[3600:] > 0)).float()
        print(s, l.item(), "color", acc[:, :8].mean().item(), "shape", acc[:, 8:14].mean().item())
