import torch, numpy as np
from sklearn.linear_model import LogisticRegression
from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.tasks.parser_pretrain import scene_attribute_data
torch.set_num_threads(1); torch.manual_seed(0)
cfg = load_config("quickstart", ["model.visual.pretrained=/tmp/s5/p16.safetensors","model.text.num_layers=2"])
m = VisualParsingModel(cfg.model, 30522); m.load_pretrained(); m.eval()
x, y = scene_attribute_data(1500, 7, 96)
with torch.no_grad():
    tok = torch.cat([m.encode_image(b).tokens for b in x.split(100)])
    emb = torch.cat([m.visual_embed(t, m.text_embed.type_embedding(1)) for t in tok.split(100)])
for name, f in [("parser mean", tok.mean(1)), ("parser max", tok.amax(1)), ("embed mean", emb.mean(1))]:
    f = f.numpy(); accs=[]
    for j in range(18):
        clf = LogisticRegression(max_iter=2000).fit(f[:1000], y[:1000, j].numpy())
        accs.append(clf.score(f[1000:], y[1000:, j].numpy()))
    print(name, "colour", np.mean(accs[:8]).round(3), "shape", np.mean(accs[8:14]).round(3), "bg", np.mean(accs[14:18]).round(3))
