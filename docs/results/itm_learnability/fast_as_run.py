"""Fast ITM harness. usage: fast.py NAME STEPS LOSSES(itm,mlm,mfr,vla,itc) [k=v ...]"""
import sys, json, time, torch
from torch.utils.data import DataLoader
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.tasks.pretrain import pretrain_losses
from vlparse.tasks.pretrain_eval import evaluate_pretrain, format_report
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import PretrainDataset
from vlparse.data.collate import collate_pretrain
from vlparse.data.tokenization import build_tokenizer, special_ids
from vlparse.train.optim import build_optimizer, lr_factor
torch.set_num_threads(1)
import os, math
import torch.nn.functional as F
if os.environ.get("PRELN"):
    from vlparse.models import transformer as T
    def fwd(self, x, key_mask, output_attentions=False):
        b, n, d = x.shape
        y = self.attn_norm(x)
        q, k, v = self._heads(self.query(y)), self._heads(self.key(y)), self._heads(self.value(y))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        x = x + self.attn_out(ctx.transpose(1, 2).reshape(b, n, d))
        x = x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))
        return x, None
    T.EncoderLayer.forward = fwd
name, steps, terms = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
cfg = load_config("quickstart", ["model.text.tokenizer=/work/main/.devdata/bert-tok"] + sys.argv[4:])
torch.manual_seed(cfg.train.seed)
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
model = VisualParsingModel(cfg.model, ids["vocab_size"], ids["cls"], ids["sep"])
man = load_manifest(os.environ.get('WORLD', '/tmp/exp/world') + '/manifest.json')
o = cfg.objectives
mk = lambda recs, seed: PretrainDataset(recs, tok, image_size=cfg.model.visual.image_size, max_text_len=cfg.model.text.max_text_len, num_visual_tokens=model.num_visual_tokens, seed=seed, num_pos=o.num_pos, num_neg=o.num_neg, mlm_all=o.itm_pass=="shared")
ds = mk(read_pretrain_records(man, cfg.data.train_sets, cfg.data.train_splits), 0)
val = mk(read_pretrain_records(man, ['coco'], ['val']), 1)
if os.environ.get("MIMETIC"):
    for layer in model.encoder.layers:
        layer.key.weight.data.copy_(layer.query.weight.data)
ORACLE = bool(os.environ.get("ORACLE"))
if ORACLE:
    import numpy as np
    from vlparse.data.synthetic.scenes import sample_scene, COLORS, SHAPES, SIZES, BACKGROUNDS
    from vlparse.models.outputs import VisualOutput
    cols, shps, szs = list(COLORS), list(SHAPES), list(SIZES)
    C = model.visual.out_dim
    cache = {}
    def oracle_tokens(image_id):
        if image_id not in cache:
            sc = sample_scene(np.random.default_rng([0, image_id - 1, 0]), 128)
            t = torch.zeros(36, C)
            t[:, 16 + 1 + BACKGROUNDS.index(sc.background)] = 1.0
            t[:, 16] = 1.0
            for o in sc.objects:
                cell = min(5, int(o.cy / 128 * 6)) * 6 + min(5, int(o.cx / 128 * 6))
                t[cell, 16] = 0.0
                t[cell, cols.index(o.color)] = 1.0
                t[cell, 8 + shps.index(o.shape)] = 1.0
                t[cell, 14 + szs.index(o.size)] = 1.0
            cache[image_id] = t
        return cache[image_id]
    class Oracle(torch.nn.Module):
        out_dim = C; num_tokens = 36; grid_size = (6, 6)
        def __init__(self): super().__init__(); self.current = None; self.dummy = torch.nn.Parameter(torch.zeros(1))
        def forward(self, images, output_attentions=False):
            return VisualOutput(self.current + 0 * self.dummy, (6, 6), None)
    model.visual = Oracle()
opt = build_optimizer(model.param_groups(cfg.optim.lr, cfg.optim.visual_lr, cfg.optim.weight_decay), cfg.optim)
base = [g['lr'] for g in opt.param_groups]
step = 0; t0 = time.time(); hist = []
acc = {'itm_acc': [], 'mlm_acc': []}
epoch = 0
while step < steps:
    ds.set_epoch(epoch); epoch += 1
    for batch in DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate_pretrain, drop_last=True, generator=torch.Generator().manual_seed(epoch)):
        f = lr_factor(step, cfg.optim, len(ds)//cfg.train.batch_size)
        for g, b in zip(opt.param_groups, base): g['lr'] = b * f
        if ORACLE:
            model.visual.current = torch.stack([oracle_tokens(ds.records[int(i)]["image_id"] if isinstance(ds.records[int(i)], dict) else ds.records[int(i)].image_id) for i in batch["index"]])
        L = pretrain_losses(model, batch, o)
        loss = sum({'itm': L.itm, 'mlm': L.mlm, 'mfr': o.lambda_mfr*L.mfr, 'vla': o.vla_weight*L.vla, 'itc': (o.lambda_itc*L.itc if L.itc is not None else 0)}[t] for t in terms)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
        s = L.scalars(); acc['itm_acc'].append(s.get('itm_acc', 0)); acc['mlm_acc'].append(s.get('mlm_acc', 0))
        step += 1
        if step % 50 == 0:
            line = {'step': step, 's': round(time.time()-t0), 'itm_acc': round(sum(acc['itm_acc'][-50:])/50, 3), 'mlm_acc': round(sum(acc['mlm_acc'][-50:])/50, 3), 'spread': round(s.get('visual_spread', 0), 3), 'itc': round(s.get('itc', 0), 3)}
            print(json.dumps(line), flush=True)
        if step >= steps: break
if ORACLE: sys.exit(0)
r = evaluate_pretrain(model, val, num_images=150, probe_images=0, retrieval_images=0)
print(name, sys.argv[3:], format_report(r).replace("\n", " | "), f"{time.time()-t0:.0f}s", flush=True)
torch.save(model.state_dict(), f'/tmp/exp/{name}.pt')
