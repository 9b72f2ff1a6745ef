import numpy as np
import importlib; from vlparse.data.synthetic import scenes; G = importlib.import_module("vlparse.data.synthetic.generate")
orig = scenes.sample_scene
class R:
    def __init__(self, rng): self.rng = rng; self.first = True
    def integers(self, a, b=None, *k):
        if self.first and a == 2 and b == 7:
            self.first = False; return self.rng.integers(2, 4)
        return self.rng.integers(a, b, *k) if b is not None else self.rng.integers(a)
    def __getattr__(self, n): return getattr(self.rng, n)
def easy(rng, size=256): return orig(R(rng), size)
G.sample_scene = easy
G.generate('/tmp/exp/world_easy', 3000, seed=0, image_size=128, workers=1, progress=False)
