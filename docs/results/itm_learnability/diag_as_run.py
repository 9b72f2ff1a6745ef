import sys, json, torch
from vlparse.models.loading import load_run
from vlparse.tasks.pretrain_eval import evaluate_pretrain, format_report
from vlparse.data import read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import PretrainDataset
from vlparse.data.tokenization import build_tokenizer
torch.set_num_threads(1)
model, cfg, _ = load_run(sys.argv[1])
tok = build_tokenizer(cfg.model.text.tokenizer)
man = load_manifest('/tmp/exp/world/manifest.json')
recs = read_pretrain_records(man, ['coco'], ['val'])
ds = PretrainDataset(recs, tok, image_size=cfg.model.visual.image_size, max_text_len=cfg.model.text.max_text_len, num_visual_tokens=model.num_visual_tokens, seed=1)
r = evaluate_pretrain(model, ds, num_images=int(sys.argv[2]) if len(sys.argv)>2 else 200, probe_images=0, retrieval_images=0)
print(format_report(r))
