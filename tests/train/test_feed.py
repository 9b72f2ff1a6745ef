"""The trainer's feed: a stream's steps per epoch from its whole micro-batches, its DataLoader
at the loop's position, and the checks of a stream's layout on resume."""

from __future__ import annotations

import pytest
from torch.utils.data import IterableDataset

from vlparse.config import DataConfig, TrainConfig
from vlparse.data.shards import ShardDataset, write_shards
from vlparse.errors import ConfigError
from vlparse.train.feed import check_layout, plan_feed
from vlparse.train.state import LoopState


@pytest.fixture(scope="module")
def stream(scene_world, tmp_path_factory) -> ShardDataset:
    out = tmp_path_factory.mktemp("shards") / "s"
    write_shards(scene_world, out, maxcount=16, progress=False)
    return ShardDataset(out, shuffle_buffer=8)  # 105 samples


def _keys(batch: list[dict]) -> list[str]:
    return [item["key"] for item in batch]


def test_a_stream_epoch_is_its_workers_whole_micro_batches(stream):
    """105 samples over 2 workers: 53 and 52, so 13 micro-batches of 4 each (the last 1 and 0
    samples dropped), 26 in all: 13 steps of 2 micro-batches."""
    train, data = TrainConfig(batch_size=8, grad_accum=2), DataConfig(num_workers=2)
    feed = plan_feed(stream, train, data, world_size=1, rank=0)
    assert (feed.sampler, feed.micro, feed.steps_per_epoch) == (None, 4, 13)
    assert feed.examples(world_size=1) == 105
    state = LoopState()
    batches = list(feed.loader(state, list, None, pin_memory=False, exact=True))
    assert len(batches) == 26 and {len(b) for b in batches} == {4}
    state.batch_in_epoch = 9  # resumed after 9 micro-batches: the other 17 come
    rest = list(feed.loader(state, list, None, pin_memory=False, exact=True))
    assert sorted(k for b in batches[:9] + rest for k in _keys(b)) == sorted(
        k for b in batches for k in _keys(b))
    fast = list(feed.loader(state, list, None, pin_memory=False, exact=False))
    assert len(fast) == 17 and {len(b) for b in fast} == {4}  # the count is exact either way


def test_a_stream_must_make_a_step(stream):
    """Micro-batches of 30: one from each worker's 53 and 52 samples, 2 in all, one step of 2;
    a third would be needed for ``grad_accum=3``."""
    feed = plan_feed(stream, TrainConfig(batch_size=60, grad_accum=2), DataConfig(num_workers=2),
                     world_size=1, rank=0)
    assert feed.steps_per_epoch == 1
    with pytest.raises(ConfigError, match="fewer than one step"):
        plan_feed(stream, TrainConfig(batch_size=90, grad_accum=3), DataConfig(num_workers=2),
                  world_size=1, rank=0)


class _Plain(IterableDataset):
    def __iter__(self):
        return iter(range(3))


def test_what_the_feed_refuses(stream):
    with pytest.raises(TypeError, match="ResumableStream"):
        plan_feed(_Plain(), TrainConfig(batch_size=1), DataConfig(), world_size=1, rank=0)
    shards = DataConfig(format="shards", shards="somewhere")
    with pytest.raises(ConfigError, match="only pre-training streams shards"):
        plan_feed(list(range(10)), TrainConfig(batch_size=2), shards, world_size=1, rank=0)


def test_a_stream_resumes_mid_epoch_only_under_its_layout(stream):
    feed = plan_feed(stream, TrainConfig(batch_size=4), DataConfig(num_workers=2), 1, 0)
    saved = LoopState(batch_in_epoch=3, world_size=1, num_workers=1, micro_batch=4)
    with pytest.raises(ConfigError, match="1 process.* x 1 data.num_workers.*1 x 2"):
        check_layout(saved, feed, world_size=1)
    at_epoch_end = LoopState(epoch=1, world_size=2, num_workers=1, micro_batch=4)
    check_layout(at_epoch_end, feed, world_size=1)  # nothing consumed: any layout
    assert (at_epoch_end.world_size, at_epoch_end.num_workers) == (1, 2)
    older = LoopState(batch_in_epoch=3)  # a checkpoint without a layout is taken as it is
    check_layout(older, feed, world_size=1)
    assert older.micro_batch == 4
