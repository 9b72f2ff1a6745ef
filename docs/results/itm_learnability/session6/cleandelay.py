"""Quickstart pre-training where, while the MLM weight is 0, the shared pass gets the clean texts
(monkeypatched). usage: cleandelay.py OUT [overrides]"""
import sys
import vlparse.tasks.pretrain as TP
from vlparse.cli import main
_orig = TP.pretrain_losses
def _pl(model, batch, cfg, reduce_count=TP._identity, mlm_weight=1.0):
    if mlm_weight == 0.0:
        batch = dict(batch, mlm_input_ids=batch["input_ids"])
    return _orig(model, batch, cfg, reduce_count, mlm_weight=mlm_weight)
TP.pretrain_losses = _pl
sys.exit(main(["pretrain", "--config", "quickstart", "--data", "/tmp/exp/world/manifest.json", "--out", sys.argv[1],
               "model.text.tokenizer=/work/main/.devdata/bert-tok", "train.eval_every=200", "train.progress=false"] + sys.argv[2:]))
