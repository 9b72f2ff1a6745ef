"""Text-only MLM pre-training of the fusion Transformer on the world's captions (a 'BERT' for the
world). usage: textpre.py OUT STEPS [k=v]"""
import sys, json, time, os
import numpy as np, torch
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.tokenization import build_tokenizer, special_ids, encode_texts
from vlparse.objectives.mlm import mask_tokens, mlm_loss
from safetensors.torch import save_file
torch.set_num_threads(int(os.environ.get("T", "1")))
out, steps = sys.argv[1], int(sys.argv[2])
opts = dict(a.split("=", 1) for a in sys.argv[3:])
g = lambda k, d: type(d)(opts.get(k, d))
torch.manual_seed(0)
cfg = load_config("quickstart", ["model.text.tokenizer=/work/main/.devdata/bert-tok", f"model.text.num_layers={g('layers',2)}"])
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
model = VisualParsingModel(cfg.model, ids["vocab_size"], ids["cls"], ids["sep"])
man = load_manifest("/tmp/exp/world/manifest.json")
tr = read_pretrain_records(man, ["coco", "vg"], ["train", "restval"])
flat = [x for r in tr for x in r.captions]
ii, am = encode_texts(tok, flat, 16)
print(len(flat), "texts")
params = [p for n, p in model.named_parameters() if n.startswith(("text_embed", "encoder", "mlm_head"))]
opt = torch.optim.AdamW(params, lr=g("lr", 1e-3), weight_decay=0.01, fused=True)
B = g("bs", 128); gen = torch.Generator().manual_seed(1)
t0 = time.time()
for step in range(1, steps + 1):
    for gr in opt.param_groups: gr["lr"] = g("lr", 1e-3) * min(1.0, step / 100)
    r = torch.randint(0, len(flat), (B,), generator=gen)
    x, m = ii[r], am[r]
    maskable = m.bool() & (x != ids["sep"]) & (x != ids["pad"])
    xin, lab = mask_tokens(x, maskable, ids["mask"], ids["vocab_size"], 0.15, gen)
    full = torch.cat([torch.tensor([ids["cls"], ids["sep"]]).expand(B, 2), xin], 1)
    h = model.text_embed(full, position_ids=torch.arange(full.shape[1]))
    mask = torch.cat([torch.ones(B, 2, dtype=m.dtype), m], 1)
    last, _, _ = model.encoder(h, mask)
    sel = lab != -100
    logits = model.mlm_head(last[:, 2:][sel])
    loss = mlm_loss(logits, lab[sel])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 200 == 0:
        acc = (logits.argmax(-1) == lab[sel]).float().mean().item()
        print(json.dumps({"step": step, "s": round(time.time() - t0), "loss": round(loss.item(), 3), "acc": round(acc, 3)}), flush=True)
sd = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith(("text_embed", "encoder", "mlm_head")) and k != "mlm_head.decoder.weight"}
save_file(sd, out)
