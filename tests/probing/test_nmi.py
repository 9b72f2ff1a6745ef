"""Modality NMI: both backends, the batched NMI against scikit-learn, padding, accumulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from vlparse.probing import NMIAccumulator, modality_nmi, modality_nmi_per_sample
from vlparse.probing.nmi import binary_nmi, two_means

MOD = torch.tensor(
    [
        [0, 1, 1, 1, 0, 0, 0, -1, -1],
        [0, 1, 1, 1, 1, 1, 0, 0, 0],
        [1, 0, 1, 0, 1, 0, -1, -1, -1],
    ]
)


def _ambiguous(gen: torch.Generator, batch: int = 6, tokens: int = 14, dim: int = 6):
    """Random states with a weak modality shift (several local optima) and padded tails."""
    lengths = torch.tensor([tokens, tokens - 3, tokens - 5, tokens, tokens - 1, tokens - 4])
    mod = torch.randint(0, 2, (batch, tokens), generator=gen)
    mod[torch.arange(tokens)[None] >= lengths[:batch, None]] = -1
    states = [
        torch.randn(batch, tokens, dim, generator=gen) + k * 0.4 * mod.clamp(min=0)[..., None]
        for k in range(3)
    ]
    return states, mod


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_perfectly_separated_features_give_one(backend):
    gen = torch.Generator().manual_seed(0)
    states = []
    for _ in range(2):
        h = torch.randn(3, 9, 8, generator=gen) * 0.1
        h = h + 10.0 * MOD.clamp(min=0)[..., None].float()  # vision shifted far away
        h[MOD < 0] = 1e3  # padding far from everything: must be ignored, not clustered
        states.append(h)
    got = modality_nmi(states, MOD, backend=backend)
    assert got.shape == (2,) and got.dtype == torch.float64
    torch.testing.assert_close(got, torch.ones(2, dtype=torch.float64))


def test_sklearn_backend_matches_sklearn_by_hand():
    gen = torch.Generator().manual_seed(1)
    states = [torch.randn(3, 9, 5, generator=gen) for _ in range(2)]
    # make layer 1 partly modality-dependent so scores differ between layers
    states[1] = states[1] + 1.5 * MOD.clamp(min=0)[..., None].float()
    seed = 7
    got = modality_nmi_per_sample(states, MOD, seed=seed, backend="sklearn")
    assert got.shape == (3, 2)
    for b in range(3):
        keep = MOD[b] >= 0
        labels = MOD[b, keep].numpy()
        for s, h in enumerate(states):
            feats = h[b, keep].double().numpy()
            clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(feats)
            want = normalized_mutual_info_score(labels, clusters)
            assert abs(float(got[b, s]) - want) < 1e-12, (b, s)
    torch.testing.assert_close(modality_nmi(states, MOD, seed=seed, backend="sklearn"),
                               got.mean(dim=0))
    assert float(got[:, 1].mean()) > float(got[:, 0].mean())


def test_binary_nmi_equals_sklearn_including_degenerate_cases():
    gen = torch.Generator().manual_seed(2)
    cases = []
    for trial in range(300):
        n = int(torch.randint(1, 14, (1,), generator=gen))
        t = torch.randint(0, 2, (n,), generator=gen)
        p = torch.randint(0, 2, (n,), generator=gen)
        if trial % 3 == 0:
            p = torch.full((n,), trial % 2)  # a single cluster
        if trial % 4 == 0:
            t = torch.ones(n, dtype=torch.long)  # a single class
        cases.append((t, p))
    cases += [(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 0, 0])),  # permuted: 1.0
              (torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))]  # independent: 0.0
    pad = 16
    t_all = torch.zeros(len(cases), pad, dtype=torch.long)
    p_all = torch.ones(len(cases), pad, dtype=torch.long)  # junk in padding
    valid = torch.zeros(len(cases), pad, dtype=torch.bool)
    for i, (t, p) in enumerate(cases):
        t_all[i, : len(t)], p_all[i, : len(p)], valid[i, : len(t)] = t, p, True
    got = binary_nmi(t_all, p_all, valid)
    degenerate = 0
    for i, (t, p) in enumerate(cases):
        want = normalized_mutual_info_score(t.numpy(), p.numpy())
        if len(set(t.tolist())) == 1 or len(set(p.tolist())) == 1:
            degenerate += 1
            assert float(got[i]) == want, (t.tolist(), p.tolist())  # exactly 1.0 or 0.0
        else:
            assert abs(float(got[i]) - want) < 1e-12, (t.tolist(), p.tolist())
    assert degenerate > 50 and {float(got[-2]), float(got[-1])} == {1.0, 0.0}


def test_torch_backend_equals_sklearn_backend_on_separated_blobs():
    gen = torch.Generator().manual_seed(3)
    batch, tokens, dim = 5, 16, 12
    blob = torch.randint(0, 2, (batch, tokens), generator=gen)  # the true 2-cluster structure
    centres = 8.0 * torch.randn(batch, 2, dim, generator=gen)
    mod = blob.clone()
    flip = torch.rand(batch, tokens, generator=gen) < 0.25  # modality only partly follows blobs
    mod[flip] = 1 - mod[flip]
    mod[:, -2:] = -1
    states = []
    for _ in range(2):
        h = centres.gather(1, blob[..., None].expand(-1, -1, dim)) + torch.randn(
            batch, tokens, dim, generator=gen
        )
        states.append(h)
    fast = modality_nmi_per_sample(states, mod, backend="torch")
    slow = modality_nmi_per_sample(states, mod, backend="sklearn")
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    assert 0.0 < float(fast.min()) and float(fast.max()) < 1.0  # a real test, not all 0 / 1
    labels = two_means(states[0], mod >= 0)
    keep = mod >= 0
    agree = (labels == blob) | ~keep
    swapped = (labels == 1 - blob) | ~keep
    assert bool((agree.all(1) | swapped.all(1)).all())
    assert bool((labels[~keep] == -1).all())


def test_torch_two_means_is_as_good_as_sklearn_on_ambiguous_data():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(12, 40, 8, generator=gen, dtype=torch.float64)
    x[:, :15] += 0.4
    labels = two_means(x, torch.ones(12, 40, dtype=torch.bool)).numpy()

    def inertia(feats: np.ndarray, lab: np.ndarray) -> float:
        return sum(((feats[lab == k] - feats[lab == k].mean(0)) ** 2).sum() for k in (0, 1))

    ours = [inertia(x[b].numpy(), labels[b]) for b in range(12)]
    theirs = [
        inertia(x[b].numpy(), KMeans(2, n_init=10, random_state=0).fit_predict(x[b].numpy()))
        for b in range(12)
    ]
    assert np.mean(ours) <= 1.01 * np.mean(theirs)


def test_padding_changes_nothing_and_per_sample_equals_batched():
    gen = torch.Generator().manual_seed(5)
    states, mod = _ambiguous(gen)
    got = modality_nmi_per_sample(states, mod)
    # garbage in the excluded tokens and extra padded columns
    padded_mod = torch.cat([mod, torch.full((mod.shape[0], 3), -1)], dim=1)
    padded = []
    for h in states:
        junk = h.clone()
        junk[mod < 0] = float("nan")
        padded.append(torch.cat([junk, 1e6 * torch.ones(h.shape[0], 3, h.shape[2])], dim=1))
    torch.testing.assert_close(modality_nmi_per_sample(padded, padded_mod), got)
    for b in range(mod.shape[0]):
        one = modality_nmi_per_sample([h[b : b + 1] for h in states], mod[b : b + 1])
        torch.testing.assert_close(one[0], got[b])
    # the clustering does depend on the seed on such data (several local optima exist)
    others = [modality_nmi_per_sample(states, mod, seed=k, n_init=2) for k in range(1, 6)]
    assert any(not torch.equal(o, others[0]) for o in others[1:])


def test_autocast_does_not_change_the_torch_backend():
    gen = torch.Generator().manual_seed(6)
    states, mod = _ambiguous(gen)
    want = modality_nmi_per_sample(states, mod)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = modality_nmi_per_sample(states, mod)
    torch.testing.assert_close(got, want)


def test_accumulator_streams_two_batches_like_one():
    gen = torch.Generator().manual_seed(7)
    states, mod = _ambiguous(gen)
    acc = NMIAccumulator(len(states), seed=3)
    acc.update([h[:2] for h in states], mod[:2])
    acc.update([h[2:] for h in states], mod[2:])
    assert acc.num_samples == mod.shape[0]
    torch.testing.assert_close(acc.compute(), modality_nmi(states, mod, seed=3))
    with pytest.raises(ValueError, match="expected 3 hidden states"):
        acc.update(states * 2, mod)
    acc.reset()
    with pytest.raises(RuntimeError, match="no samples"):
        acc.compute()
    # bad labels are found without waiting for the device: reported by compute()
    bad = mod.clone()
    bad[1, 1:] = -1  # one token left
    acc.update(states, bad)
    with pytest.raises(ValueError, match="1 of the 6 samples seen"):
        acc.compute()


def test_errors():
    h = [torch.randn(1, 3, 4)]
    with pytest.raises(ValueError, match="fewer than 2"):
        modality_nmi(h, torch.tensor([[0, -1, -1]]))
    with pytest.raises(ValueError, match="modality must be"):
        modality_nmi(h, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="backend must be"):
        modality_nmi(h, torch.tensor([[0, 1, 1]]), backend="faiss")
    with pytest.raises(RuntimeError, match="no samples"):
        NMIAccumulator(1).compute()
