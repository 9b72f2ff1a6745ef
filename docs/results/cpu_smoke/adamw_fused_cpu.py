import torch,time
torch.set_num_threads(1)
ps=[torch.nn.Parameter(torch.randn(30522,128))]+[torch.nn.Parameter(torch.randn(128,128)) for _ in range(40)]+[torch.nn.Parameter(torch.randn(128)) for _ in range(80)]
for p in ps: p.grad=torch.randn_like(p)
for kw in [{}, {'foreach':True}, {'fused':True}]:
    o=torch.optim.AdamW(ps,1e-4,**kw)
    o.step()
    t=time.perf_counter()
    for _ in range(5): o.step()
    print(kw,(time.perf_counter()-t)/5)
