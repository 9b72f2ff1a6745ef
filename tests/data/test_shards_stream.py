"""The shuffle buffer and caption reservoir of a shard stream, and the pre-training collator on
streamed items: the same drawing code as for manifest items."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlparse.data.collate import PretrainCollator
from vlparse.data.formats import ImageCaptions
from vlparse.data.negatives import normalize_caption
from vlparse.data.pretrain import PretrainDataset
from vlparse.data.shards import ShardDataset, write_shards
from vlparse.data.shards.buffer import buffered
from vlparse.models.processor import VisualParsingProcessor
from vlparse.processing.tokenization import build_tokenizer

S, L, M = 16, 12, 9


def _last_read(inputs: list[int], size: int, k: int) -> tuple:
    """Hand rule: the ``k``-th sample out leaves once ``min(k + size, n)`` samples were read;
    the reservoir then holds the last ``size`` of them."""
    read = min(k + size, len(inputs))
    return tuple((x, [f"c{x}"]) for x in inputs[max(0, read - size):read])


@pytest.mark.parametrize("size", [1, 4, 30])
def test_buffer_order_and_reservoir_follow_the_hand_rule(size):
    inputs = list(range(20))
    cap = lambda x: (x, [f"c{x}"])
    fifo = list(buffered(inputs, size, None, cap))
    assert [x for x, _ in fifo] == inputs  # no generator: the order as read
    shuffled = list(buffered(inputs, size, random.Random(3), cap))
    assert sorted(x for x, _ in shuffled) == inputs
    assert ([x for x, _ in shuffled] != inputs) == (size > 1)
    for out in (fifo, shuffled):
        assert [res for _, res in out] == [_last_read(inputs, size, k) for k in range(20)]
    again = list(buffered(inputs, size, random.Random(3), cap, skip=7))
    assert again == shuffled[7:]  # skipping after the shuffle: the same rest
    odd = list(buffered(inputs, size, None, lambda x: cap(x) if x % 2 else None))
    assert all(r % 2 for _, res in odd for r, _ in res)  # entries without captions stay out


def test_reservoir_is_a_snapshot():
    out = buffered(range(6), 2, None, lambda x: (x, [str(x)]))
    first, res = next(out)
    rest = list(out)
    assert first == 0 and [r for r, _ in res] == [0, 1] and len(rest) == 5


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("bert-base-uncased")


def _records(root: Path, n: int = 8) -> list[ImageCaptions]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = root / f"{i}.png"
        Image.new("RGB", (10 + i, 8), (30 * i, 10, 200)).save(path)
        out.append(ImageCaptions(str(path), [f"picture {i} number {j}" for j in range(3)], i,
                                 "test"))
    return out


def _collator(records, tok, **kw) -> PretrainCollator:
    return PretrainCollator(records, VisualParsingProcessor(tok, S, L), M, num_pos=2, num_neg=3,
                            seed=4, **kw)


def _streamed(item: dict, records: list[ImageCaptions], reservoir: list[int]) -> dict:
    """A manifest item as a stream carries it: its captions and a reservoir."""
    j = item["record"]
    return {**item, "captions": list(records[j].captions),
            "reservoir": tuple((r, list(records[r].captions)) for r in reservoir)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def test_a_reservoir_of_every_record_draws_what_the_record_list_draws(tmp_path, tok):
    """The unmatched draw maps a draw ``d`` among the other records to ``d + (d >= own)`` in the
    list of records, and to the ``d``-th of the reservoir's other records: with every record in
    the reservoir, in order, that is the same record, so the whole item is the same."""
    records = _records(tmp_path)
    ds = PretrainDataset(records)
    odd = lambda record, text: int(text.split()[1]) % 2 == record % 2  # a filter that bites
    for kw in ({}, {"negative_filter": odd}):
        listed, stream = _collator(records, tok, **kw), _collator(None, tok, **kw)
        for i in range(len(records)):
            item = ds[i]
            assert _same(listed.draw(item),
                         stream.draw(_streamed(item, records, list(range(len(records))))))
        batch = [ds[i] for i in range(len(records))]
        whole = listed(batch)
        streamed = stream([_streamed(it, records, range(len(records))) for it in batch])
        assert _same(whole, streamed)


def test_stream_items_draw_from_their_reservoir_only(tmp_path, tok):
    records = _records(tmp_path)
    ds = PretrainDataset(records)
    forbidden = lambda record, text: "number 0" in text  # the filter rejects these
    stream = _collator(None, tok, negative_filter=forbidden)
    for i in range(len(records)):
        pool = [i, (i + 1) % 8, (i + 3) % 8]  # its own record and two others
        texts = stream.draw(_streamed(ds[i], records, pool))["texts"]
        allowed = {c for r in pool[1:] for c in records[r].captions if "number 0" not in c}
        assert set(texts[:2]) <= set(records[i].captions)
        assert set(texts[2:]) <= allowed  # 20 draws never all hit a rejected caption here
    lonely = _streamed(ds[2], records, [2])
    with pytest.raises(ValueError, match="no caption of another image"):
        stream.draw(lonely)


def test_batch_negatives_of_stream_items_skip_own_captions(tmp_path, tok):
    records = _records(tmp_path)
    for r in records[4:]:  # records 4-7 share a caption with record 0
        r.captions[0] = records[0].captions[1]
    ds = PretrainDataset(records)
    stream = _collator(None, tok, negatives="batch", group=4)
    items = [_streamed(ds[i], records, range(8)) for i in range(8)]
    batch = stream(items)
    for a, texts in enumerate(batch["texts"]):
        own = {normalize_caption(c) for c in records[batch["record"][a]].captions}
        assert not own & {normalize_caption(t) for t in texts[2:]}


def test_shard_items_carry_the_reservoir_of_their_worker(scene_world, tmp_path):
    """Unshuffled, with one worker, the reservoir of the sample at epoch position ``k`` holds
    records ``k .. k+B-1`` (the buffer's contents when it leaves), the last ``B`` at the end."""
    write_shards(scene_world, tmp_path / "s", maxcount=16, progress=False)
    b = 10
    items = list(ShardDataset(tmp_path / "s", shuffle=False, shuffle_buffer=b))
    n = len(items)
    for k, item in enumerate(items):
        first = min(k, n - b)
        assert [r for r, _ in item["reservoir"]] == list(range(first, first + b))
        assert item["record"] == k and item["captions"] == item["reservoir"][k - first][1]
