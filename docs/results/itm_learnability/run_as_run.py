"""Experiment runner: quickstart pretraining with an init-std patch. usage: run.py NAME STD [k=v ...]"""
import sys, json, time, os
import torch
from torch import nn
from vlparse.models import single_stream as ss
from vlparse.config import load_config
from vlparse.tasks.pretrain import run_pretrain

name, std = sys.argv[1], float(sys.argv[2])
over = sys.argv[3:]
orig = ss.VisualParsingModel.__init__
def patched(self, *a, **k):
    orig(self, *a, **k)
    if std != 0.02:
        for mod in (self.encoder, self.text_embed, self.mlm_head, self.itm_head, self.mfr_head, self.visual_embed):
            for m in mod.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=std)
        nn.init.normal_(self.visual_mask_token, std=std)
ss.VisualParsingModel.__init__ = patched
cfg = load_config("quickstart", ["train.progress=false", "model.text.tokenizer=/work/main/.devdata/bert-tok"] + over)
t=time.time()
s = run_pretrain(cfg, "/tmp/exp/world/manifest.json", f"/tmp/exp/{name}")
print(name, std, over, json.dumps(s["held_out"]), f"{time.time()-t:.0f}s")
