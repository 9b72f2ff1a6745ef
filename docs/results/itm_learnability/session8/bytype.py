import sys, json, torch, collections, re
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import PretrainDataset
from vlparse.data.synthetic.truth import SceneTruth
from vlparse.data.tokenization import build_tokenizer, special_ids
from vlparse.train.checkpoint import load_model_weights, find_checkpoint
torch.set_num_threads(1)
run, mp = sys.argv[1], sys.argv[2]
cfg = load_config(run + "/config.yaml", [])
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
model = VisualParsingModel(cfg.model, ids["vocab_size"], cls_token_id=ids["cls"], sep_token_id=ids["sep"])
load_model_weights(find_checkpoint(run), model); model.eval()
man = load_manifest(mp); truth = SceneTruth.from_manifest(man)
recs = read_pretrain_records(man, ['coco'], ['val', 'test'])
o = cfg.objectives
ds = PretrainDataset(recs, tok, cfg.model.visual.image_size, cfg.model.text.max_text_len, model.num_visual_tokens, o.num_pos, o.num_neg, o.mlm_prob, 1, truth=truth)
def kind(t):
    t = t.lower()
    if "background" in t or "shapes" in t or re.search(r"\d|objects on", t): return "scene"
    if t.startswith("there"): return "count"
    if "bigger" in t or "smaller" in t: return "size"
    if any(r in t for r in ("left of", "right of", "above", "below", "next to")): return "relation"
    return "list"
res = collections.defaultdict(lambda: [0, 0])
with torch.no_grad():
    for i in range(len(ds)):
        it = ds[i]
        tokens = model.encode_image(it["image"][None]).tokens
        out = model.fuse(tokens.repeat(4, 1, 1), it["input_ids"], it["attention_mask"])
        pred = model.itm_head(out.cls).argmax(-1)
        for k in range(4):
            lab = int(k < 2)
            key = ("pos " if lab else "neg ") + kind(it["texts"][k])
            res[key][0] += int(pred[k] == lab); res[key][1] += 1
for k in sorted(res): print(k, res[k][1], round(res[k][0] / res[k][1], 3))
tot = sum(v[1] for v in res.values()); print("all", tot, round(sum(v[0] for v in res.values()) / tot, 3))
