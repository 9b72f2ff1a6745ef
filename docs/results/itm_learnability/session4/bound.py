import numpy as np, re
from vlparse.data.synthetic.scenes import sample_scene, COLORS, SHAPES, BACKGROUNDS
from vlparse.data.synthetic.language import captions, regions, NUMBER_WORDS
N=2000
scenes=[sample_scene(np.random.default_rng([0,i,0]),128) for i in range(N)]
caps=[]
for i,s in enumerate(scenes):
    rng=np.random.default_rng([0,i,1])
    c=[t for t,_ in captions(s,rng)]
    r=[t for t,_ in regions(s,rng)]
    caps.append((c,r))
def ok(text,s, level):
    w=text.split()
    cols={o.color for o in s.objects}; shp={o.shape for o in s.objects}
    pairs={(o.color,o.shape) for o in s.objects}
    for x in w:
        if x in COLORS and x not in cols: return False
        xs=x[:-2] if x.endswith('es') and x[:-2] in SHAPES else (x[:-1] if x.endswith('s') and x[:-1] in SHAPES else x)
        if xs in SHAPES and xs not in shp: return False
        if x in BACKGROUNDS and x!=s.background: return False
    if level>=2:
        for a,b in zip(w,w[1:]):
            if a in COLORS and b in SHAPES and (a,b) not in pairs: return False
        m=re.search(r"(\w+) (shapes|objects) on",text)
        if m and m.group(1)!=NUMBER_WORDS[len(s.objects)]: return False
    return True
rng=np.random.default_rng(1)
for level in (1,2):
  for kind in (0,1,'mix'):
    acc=[];posok=[]
    for i in range(N):
        j=int(rng.integers(N-1)); j+= j>=i
        k = kind if kind!='mix' else int(rng.integers(2))
        neg=caps[j][k][int(rng.integers(len(caps[j][k])))]
        pos=caps[i][k][int(rng.integers(len(caps[i][k])))]
        posok.append(ok(pos,scenes[i],level)); acc.append(not ok(neg,scenes[i],level))
    print(level,kind,'pos pass',np.mean(posok),'neg reject',np.mean(acc),'acc',(np.mean(posok)+np.mean(acc))/2)
# colour-only rule
