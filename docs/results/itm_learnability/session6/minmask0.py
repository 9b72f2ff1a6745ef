"""Quickstart pre-training with MLM masking that does not force a masked token into every caption
(min_masked=0; monkeypatched). usage: minmask0.py OUT [overrides]"""
import sys
import vlparse.data.pretrain as P
from vlparse.cli import main
_orig = P.mask_tokens
P.mask_tokens = lambda *a, **k: _orig(*a, **{**k, "min_masked": 0})
sys.exit(main(["pretrain", "--config", "quickstart", "--data", "/tmp/exp/world/manifest.json", "--out", sys.argv[1],
               "model.text.tokenizer=/work/main/.devdata/bert-tok", "train.eval_every=200", "train.progress=false"] + sys.argv[2:]))
