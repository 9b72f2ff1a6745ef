import numpy as np
from vlparse.data.synthetic.scenes import sample_scene, COLORS, SHAPES, BACKGROUNDS
from vlparse.data.synthetic.language import captions, regions
N=2000
scenes=[sample_scene(np.random.default_rng([0,i,0]),128) for i in range(N)]
caps=[]
for i,s in enumerate(scenes):
    rng=np.random.default_rng([0,i,1])
    caps.append(([t for t,_ in captions(s,rng)],[t for t,_ in regions(s,rng)]))
def ok(text,s,use):
    cols={o.color for o in s.objects}; shp={o.shape for o in s.objects}
    for x in text.split():
        if 'c' in use and x in COLORS and x not in cols: return False
        xs=x[:-2] if x.endswith('es') and x[:-2] in SHAPES else (x[:-1] if x.endswith('s') and x[:-1] in SHAPES else x)
        if 's' in use and xs in SHAPES and xs not in shp: return False
        if 'b' in use and x in BACKGROUNDS and x!=s.background: return False
    return True
for use in ('c','cb','cs','csb'):
    rng=np.random.default_rng(1); acc=[]
    for i in range(N):
        j=int(rng.integers(N-1)); j+= j>=i
        k=int(rng.integers(2))
        neg=caps[j][k][int(rng.integers(len(caps[j][k])))]
        acc.append(not ok(neg,scenes[i],use))
    print(use,'acc',(1+np.mean(acc))/2)
