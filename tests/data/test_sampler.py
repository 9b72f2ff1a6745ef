"""ResumableSampler: rank split equals the single-process batch, resume, epochs, drop_last."""

from __future__ import annotations

import pytest

from vlparse.data.sampler import ResumableSampler, stable_seed


@pytest.mark.parametrize("n, b, reps", [(23, 3, 2), (40, 5, 4), (12, 2, 3)])
def test_ranks_union_equals_single_process(n, b, reps):
    for epoch in range(3):
        single = ResumableSampler(n, b * reps, seed=5)
        ranks = [ResumableSampler(n, b, num_replicas=reps, rank=r, seed=5) for r in range(reps)]
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        expected = list(single)
        assert len(expected) == len(single) == n // (b * reps)
        assert all(len(batches) == len(expected) for batches in per_rank)
        for k, batch in enumerate(expected):
            assert [i for batches in per_rank for i in batches[k]] == batch
            assert all(len(batches[k]) == b for batches in per_rank)
        flat = [i for batch in expected for i in batch]
        assert len(set(flat)) == len(flat)  # a permutation: no index twice in an epoch


def test_epochs_and_seeds_differ_and_repeat():
    def order(epoch, seed=0):
        s = ResumableSampler(50, 5, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0, seed=1) != order(0)
    assert sorted(i for b in order(3) for i in b) == list(range(50))
    assert [i for b in ResumableSampler(10, 5, shuffle=False) for i in b] == list(range(10))


@pytest.mark.parametrize("reps", [1, 2])
def test_resume_mid_epoch(reps):
    samplers = [ResumableSampler(37, 4, num_replicas=reps, rank=r, seed=3) for r in range(reps)]
    for s in samplers:
        s.set_epoch(2)
    full = [list(s) for s in samplers]
    for k in (0, 1, 3, len(samplers[0])):
        for s, batches in zip(samplers, full, strict=True):
            s.set_epoch(2)
            s.set_start_batch(k)
            assert list(s) == batches[k:]
            assert list(s) == batches  # the start applies to one iteration only
    with pytest.raises(ValueError, match="set_start_batch"):
        samplers[0].set_start_batch(len(samplers[0]) + 1)


def test_drop_last_false_covers_everything():
    n, b, reps = 11, 2, 2  # G = 4: batches of 4, 4, then 3
    ranks = [ResumableSampler(n, b, reps, r, drop_last=False) for r in range(reps)]
    per_rank = [list(s) for s in ranks]
    assert len(ranks[0]) == 3 and all(len(x) == 3 for x in per_rank)
    seen = [i for k in range(3) for batches in per_rank for i in batches[k]]
    assert sorted(seen) == list(range(n))
    assert [len(x[-1]) for x in per_rank] == [2, 1]
    tiny = [list(ResumableSampler(1, 2, 2, r, drop_last=False)) for r in range(2)]
    assert all(len(x) == 1 and len(x[0]) == 1 for x in tiny)  # no rank gets an empty batch
    with pytest.raises(ValueError, match="no full global batch"):
        ResumableSampler(3, 2, num_replicas=2)


def test_stable_seed():
    seeds = {stable_seed(s, e, i) for s in range(3) for e in range(3) for i in range(30)}
    assert len(seeds) == 270 and all(0 <= x < 2**63 for x in seeds)
    assert stable_seed(1, 2, 3) == stable_seed(1, 2, 3) != stable_seed(3, 2, 1)
