"""Inter-Modality Flow: rollout against brute-force paths, closed forms, padding, batching."""

from __future__ import annotations

import itertools

import pytest
import torch

from vlparse.probing import (
    IMFAccumulator,
    inter_modality_flow,
    inter_modality_flow_per_sample,
    relabel_special,
)


def _random_attn(
    gen: torch.Generator, batch: int, heads: int, n: int, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, H, N, N)`` row-softmax attention; keys where ``key_mask`` (B, N) is False get 0."""
    logits = torch.randn(batch, heads, n, n, generator=gen, dtype=torch.float64) * 2
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return logits.softmax(dim=-1)


def _brute_force_flow(attns: list[torch.Tensor], mod: list[int], i: int, j: int) -> float:
    """F^{i,j} of one sample by summing every path of token indices through layers i..j."""
    n = len(mod)
    mixes = []
    for att in attns:
        w = att.mean(dim=0)  # (N, N), heads averaged
        mixes.append(
            [[0.5 * (float(x == y)) + 0.5 * float(w[x, y]) for y in range(n)] for x in range(n)]
        )
    inter = total = 0.0
    valid = [t for t in range(n) if mod[t] >= 0]
    for x in valid:
        for y in valid:
            acc = 0.0
            # path x = t_j <- t_{j-1} <- ... <- t_i = y: layer j takes x from k_j, ...
            for mids in itertools.product(range(n), repeat=j - i):
                seq = (x, *mids, y)
                prod = 1.0
                for step, layer in enumerate(range(j, i - 1, -1)):
                    prod *= mixes[layer][seq[step]][seq[step + 1]]
                acc += prod
            total += acc
            if mod[x] != mod[y]:
                inter += acc
    return inter / total


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_rollout_equals_brute_force_paths(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    n, layers = 4, 3
    mods = [[1, 1, 0, 0], [0, 1, 0, 1]]
    attns = [_random_attn(gen, 2, 2, n) for _ in range(layers)]
    got = inter_modality_flow_per_sample(attns, torch.tensor(mods), dtype=dtype)
    assert got.shape == (2, layers, layers) and got.dtype == dtype
    for b in range(2):
        for i in range(layers):
            for j in range(i, layers):
                want = _brute_force_flow([a[b] for a in attns], mods[b], i, j)
                assert abs(float(got[b, i, j]) - want) < tol, (b, i, j)
    mean = inter_modality_flow(attns, torch.tensor(mods), dtype=dtype)
    torch.testing.assert_close(mean, got.mean(dim=0), equal_nan=True)


def test_brute_force_with_excluded_endpoint():
    """An excluded token (-1) that is attended still carries paths, but is no endpoint."""
    gen = torch.Generator().manual_seed(1)
    mod = [0, 1, -1, 0]
    attns = [_random_attn(gen, 1, 3, 4) for _ in range(3)]
    got = inter_modality_flow_per_sample(attns, torch.tensor([mod]), dtype=torch.float64)
    for i in range(3):
        for j in range(i, 3):
            want = _brute_force_flow([a[0] for a in attns], mod, i, j)
            assert abs(float(got[0, i, j]) - want) < 1e-12


def test_no_cross_modal_attention_gives_zero():
    gen = torch.Generator().manual_seed(2)
    mod = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 0, 1, 0, 1, 0]])
    same = mod[:, :, None] == mod[:, None, :]  # (B, N, N)
    attns = []
    for _ in range(4):
        logits = torch.randn(2, 2, 6, 6, generator=gen)
        attns.append(logits.masked_fill(~same[:, None], float("-inf")).softmax(-1))
    flow = inter_modality_flow(attns, mod)
    upper = torch.triu(torch.ones(4, 4, dtype=torch.bool))
    assert torch.all(flow[upper] == 0)
    # sanity: the same graph with cross-modal attention gives a positive flow
    mixed = [_random_attn(gen, 2, 2, 6).float() for _ in range(4)]
    assert torch.all(inter_modality_flow(mixed, mod)[upper] > 0)


def test_uniform_attention_closed_form_with_padding():
    """Uniform W = U over the n valid tokens: U^2 = U, so (0.5 (I + U))^k = 2^-k I + (1-2^-k) U.

    The diagonal carries no inter mass, every row of U sums to 1 over the n valid tokens and the
    2 n_v n_l cross pairs carry 1/n each, so F^{i,j} = (1 - 2^-k) * 2 n_v n_l / n^2, k = j-i+1.
    """
    layers, n_tok = 4, 7
    mod = torch.tensor(
        [
            [0, 1, 1, 1, 0, 0, -1],  # n_v = 3, n_l = 3, one padding token
            [0, 1, 0, 0, -1, -1, -1],  # n_v = 1, n_l = 3
            [1, 1, 1, 1, 1, 0, 0],  # n_v = 5, n_l = 2
        ]
    )
    valid = mod >= 0
    gen = torch.Generator().manual_seed(3)
    attns = []
    for _ in range(layers):
        w = valid[:, None, None, :].expand(3, 2, n_tok, n_tok).double()
        w = w / w.sum(-1, keepdim=True)
        # padded query rows hold arbitrary (row-stochastic) garbage
        junk = torch.rand(3, 2, n_tok, n_tok, generator=gen, dtype=torch.float64)
        w = torch.where(valid[:, None, :, None], w, junk / junk.sum(-1, keepdim=True))
        attns.append(w)
    got = inter_modality_flow_per_sample(attns, mod, dtype=torch.float64)
    for b, (n_v, n_l) in enumerate([(3, 3), (1, 3), (5, 2)]):
        n = n_v + n_l
        for i in range(layers):
            for j in range(i, layers):
                k = j - i + 1
                want = (1 - 2.0**-k) * 2 * n_v * n_l / n**2
                assert abs(float(got[b, i, j]) - want) < 1e-12, (b, i, j)


def test_padding_changes_nothing():
    gen = torch.Generator().manual_seed(4)
    n_real, n_pad, layers = 5, 3, 3
    mod_real = torch.tensor([[0, 1, 1, 0, 0]])
    attns_real = [_random_attn(gen, 1, 2, n_real) for _ in range(layers)]
    attns_pad = []
    for a in attns_real:
        big = torch.rand(1, 2, n_real + n_pad, n_real + n_pad, generator=gen, dtype=a.dtype)
        big[..., :n_real, :] = 0.0  # real queries give padded keys zero weight
        big[..., :n_real, :n_real] = a
        big[..., n_real:, :] *= 5.0  # padded query rows: arbitrary, not even normalised
        attns_pad.append(big)
    mod_pad = torch.cat([mod_real, torch.full((1, n_pad), -1)], dim=1)
    f_real = inter_modality_flow(attns_real, mod_real, dtype=torch.float64)
    f_pad = inter_modality_flow(attns_pad, mod_pad, dtype=torch.float64)
    torch.testing.assert_close(f_pad, f_real, equal_nan=True, rtol=0, atol=1e-12)


def test_single_sample_equals_batched_and_nan_below_diagonal():
    gen = torch.Generator().manual_seed(5)
    mod = torch.tensor([[0, 1, 1, 0, 0, -1], [0, 0, 1, 1, 1, 0], [1, 0, 1, 0, -1, -1]])
    attns = [_random_attn(gen, 3, 4, 6, key_mask=mod >= 0).float() for _ in range(5)]
    batched = inter_modality_flow_per_sample(attns, mod)
    for b in range(3):
        single = inter_modality_flow([a[b : b + 1] for a in attns], mod[b : b + 1])
        torch.testing.assert_close(single, batched[b], equal_nan=True)
    flow = inter_modality_flow(attns, mod)
    lower = torch.tril(torch.ones(5, 5, dtype=torch.bool), diagonal=-1)
    assert torch.isnan(flow[lower]).all()
    assert torch.isfinite(flow[~lower]).all()
    assert ((flow[~lower] > 0) & (flow[~lower] < 1)).all()


def test_accumulator_two_batches_equals_concatenation():
    gen = torch.Generator().manual_seed(6)
    mod = torch.tensor([[0, 1, 1, 0, -1], [0, 1, 0, 0, 0], [1, 1, 0, 1, 0], [0, 1, -1, -1, -1]])
    attns = [_random_attn(gen, 4, 2, 5, key_mask=mod >= 0) for _ in range(3)]
    acc = IMFAccumulator(3, dtype=torch.float64)
    acc.update([a[:1] for a in attns], mod[:1])
    acc.update([a[1:] for a in attns], mod[1:])
    assert acc.num_samples == 4
    torch.testing.assert_close(
        acc.compute(), inter_modality_flow(attns, mod, dtype=torch.float64), equal_nan=True
    )
    acc.reset()
    with pytest.raises(RuntimeError, match="no samples"):
        acc.compute()
    with pytest.raises(ValueError, match="expected 3"):
        acc.update(attns[:2], mod)


def test_input_errors_are_clear():
    attn = [torch.full((1, 1, 3, 3), 1 / 3)] * 2
    with pytest.raises(ValueError, match="modality must have shape"):
        inter_modality_flow(attn, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="only hold"):
        inter_modality_flow(attn, torch.tensor([[0, 2, 1]]))
    with pytest.raises(ValueError, match="no non-excluded"):
        inter_modality_flow(attn, torch.tensor([[-1, -1, -1]]))
    with pytest.raises(ValueError, match="layer 1"):
        inter_modality_flow([attn[0], torch.ones(1, 1, 4, 4)], torch.tensor([[0, 1, 1]]))


def test_relabel_special():
    mod = torch.tensor([[0, 1, 1, 0, 0, -1], [0, 1, 1, 0, -1, -1]])
    out = relabel_special(mod, [0, 3], -1)
    assert out.tolist() == [[-1, 1, 1, -1, 0, -1], [-1, 1, 1, -1, -1, -1]]
    assert mod[0, 0] == 0  # the input is not modified
    assert relabel_special(mod, -1, 1).tolist() == mod.tolist()  # padding stays excluded
    assert relabel_special(mod, 0, 1)[:, 0].tolist() == [1, 1]
    with pytest.raises(ValueError, match="label"):
        relabel_special(mod, 0, 2)
    with pytest.raises(ValueError, match="out of range"):
        relabel_special(mod, 6, 1)


def test_accumulator_reports_bad_labels_at_compute_without_syncing_in_update():
    gen = torch.Generator().manual_seed(9)
    mod = torch.tensor([[0, 1, 1, 0], [-1, -1, -1, -1], [0, 2, 1, 1]])
    attns = [_random_attn(gen, 3, 2, 4, key_mask=mod >= 0) for _ in range(2)]
    acc = IMFAccumulator(2)
    acc.update(attns, mod)  # no error here: the labels are checked on the device
    assert acc.num_samples == 3
    with pytest.raises(ValueError, match="2 of the 3 samples seen"):
        acc.compute()
    acc.reset()
    acc.update([a[:1] for a in attns], mod[:1])
    torch.testing.assert_close(
        acc.compute(), inter_modality_flow([a[:1] for a in attns], mod[:1]).double(),
        equal_nan=True,
    )
