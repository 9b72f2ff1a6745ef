"""Modality NMI: separated features, agreement with scikit-learn, accumulation."""

from __future__ import annotations

import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from vlparse.probing import NMIAccumulator, modality_nmi, modality_nmi_per_sample

MOD = torch.tensor(
    [
        [0, 1, 1, 1, 0, 0, 0, -1, -1],
        [0, 1, 1, 1, 1, 1, 0, 0, 0],
        [1, 0, 1, 0, 1, 0, -1, -1, -1],
    ]
)


def test_perfectly_separated_features_give_one():
    gen = torch.Generator().manual_seed(0)
    states = []
    for _ in range(2):
        h = torch.randn(3, 9, 8, generator=gen) * 0.1
        h = h + 10.0 * MOD.clamp(min=0)[..., None].float()  # vision shifted far away
        h[MOD < 0] = 1e3  # padding far from everything: must be ignored, not clustered
        states.append(h)
    got = modality_nmi(states, MOD)
    assert got.shape == (2,)
    torch.testing.assert_close(got, torch.ones(2, dtype=torch.float64))


def test_matches_sklearn_by_hand():
    gen = torch.Generator().manual_seed(1)
    states = [torch.randn(3, 9, 5, generator=gen) for _ in range(2)]
    # make layer 1 partly modality-dependent so scores differ between layers
    states[1] = states[1] + 1.5 * MOD.clamp(min=0)[..., None].float()
    seed = 7
    got = modality_nmi_per_sample(states, MOD, seed=seed)
    assert got.shape == (3, 2)
    for b in range(3):
        keep = MOD[b] >= 0
        labels = MOD[b, keep].numpy()
        for s, h in enumerate(states):
            feats = h[b, keep].double().numpy()
            clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(feats)
            want = normalized_mutual_info_score(labels, clusters)
            assert abs(float(got[b, s]) - want) < 1e-12, (b, s)
    torch.testing.assert_close(modality_nmi(states, MOD, seed=seed), got.mean(dim=0))
    assert float(got[:, 1].mean()) > float(got[:, 0].mean())


def test_accumulator_two_batches_equals_concatenation():
    gen = torch.Generator().manual_seed(2)
    states = [torch.randn(3, 9, 4, generator=gen)]
    acc = NMIAccumulator(1, seed=3)
    acc.update([h[:2] for h in states], MOD[:2])
    acc.update([h[2:] for h in states], MOD[2:])
    assert acc.num_samples == 3
    torch.testing.assert_close(acc.compute(), modality_nmi(states, MOD, seed=3))
    with pytest.raises(ValueError, match="expected 1 hidden states"):
        acc.update(states * 2, MOD)


def test_errors():
    h = [torch.randn(1, 3, 4)]
    with pytest.raises(ValueError, match="fewer than 2"):
        modality_nmi(h, torch.tensor([[0, -1, -1]]))
    with pytest.raises(ValueError, match="modality must be"):
        modality_nmi(h, torch.tensor([[0, 1]]))
    with pytest.raises(RuntimeError, match="no samples"):
        NMIAccumulator(1).compute()
