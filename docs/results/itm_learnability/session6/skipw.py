"""Full pre-training with MLM that never masks function words (monkeypatched). usage: skipw.py OUT [overrides]"""
import os, sys, torch
import vlparse.data.pretrain as P
from vlparse.data.tokenization import build_tokenizer
from vlparse.cli import main
import vlparse.tasks.pretrain as TP
RAMP = os.environ.get("RAMP")
if RAMP:
    a, b = map(int, RAMP.split(","))
    _orig_pl = TP.pretrain_losses
    _n = [0]
    def _pl(model, batch, cfg, reduce_count=TP._identity):
        out = _orig_pl(model, batch, cfg, reduce_count)
        if model.training:
            _n[0] += 1
            w = min(1.0, max(0.0, (_n[0] - a) / max(b - a, 1)))
            out.loss = out.loss - (1.0 - w) * out.mlm
        return out
    TP.pretrain_losses = _pl
WORDS = os.environ.get("SKIP", "a an the is are there of to and . , on in with than").split()
tok = build_tokenizer("/work/main/.devdata/bert-tok")
vocab = tok.get_vocab(); V = max(vocab.values()) + 1
skip = torch.zeros(V, dtype=torch.bool)
for w in WORDS:
    skip[vocab[w]] = True
orig = P.mask_tokens
def patched(ids, maskable, *a, **k):
    return orig(ids, maskable & ~skip[ids], *a, **k)
if WORDS != ["none"]:
    P.mask_tokens = patched
sys.exit(main(["pretrain", "--config", "quickstart", "--data", "/tmp/exp/world/manifest.json", "--out", sys.argv[1],
               "model.text.tokenizer=/work/main/.devdata/bert-tok", "train.eval_every=100"] + sys.argv[2:]))
