"""Held-out evaluation of a run's final model with random and with verified negatives."""
import sys, json, torch
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import PretrainDataset
from vlparse.data.synthetic.truth import SceneTruth
from vlparse.data.tokenization import build_tokenizer, special_ids
from vlparse.train.checkpoint import load_model_weights, find_checkpoint
from vlparse.tasks.pretrain_eval import evaluate_pretrain
torch.set_num_threads(1)
run, manifest_path = sys.argv[1], sys.argv[2]
cfg = load_config(run + "/config.yaml", [])
tok = build_tokenizer(cfg.model.text.tokenizer); ids = special_ids(tok)
model = VisualParsingModel(cfg.model, ids["vocab_size"], cls_token_id=ids["cls"], sep_token_id=ids["sep"])
load_model_weights(find_checkpoint(run), model)
man = load_manifest(manifest_path)
recs = read_pretrain_records(man, [cfg.data.val_set], [cfg.data.val_split])
o = cfg.objectives
out = {"run": run, "manifest": manifest_path}
for name, truth in (("random", None), ("verified", SceneTruth.from_manifest(man))):
    ds = PretrainDataset(recs, tok, cfg.model.visual.image_size, cfg.model.text.max_text_len,
                         model.num_visual_tokens, o.num_pos, o.num_neg, o.mlm_prob,
                         cfg.train.seed + 1, truth=truth)
    r = evaluate_pretrain(model, ds, num_images=cfg.train.eval_images, probe_images=0, retrieval_images=0)
    out[name] = {"itm_acc": r["itm_acc"], "itm_pairs": r["itm_pairs"], "mlm_acc": r["mlm_acc"]}
print(json.dumps(out, indent=1))
