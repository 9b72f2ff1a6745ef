"""PretrainDataset and PretrainCollator: shapes, seeded determinism, caption membership, bad
images, batch negatives, collation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlparse.data.collate import PretrainCollator, stack_items
from vlparse.data.formats import ImageCaptions
from vlparse.data.negatives import lend_batch_negatives, normalize_caption
from vlparse.data.pretrain import PretrainDataset
from vlparse.errors import BadImageError
from vlparse.models.processor import VisualParsingProcessor
from vlparse.processing.images import load_image
from vlparse.processing.tokenization import build_tokenizer, encode_texts, special_ids
from vlparse.processing.transforms import denormalize, image_transform

S, L, M, P, N = 16, 10, 9, 2, 2
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
RGB = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (128, 0, 128), (255, 128, 0),
       (0, 0, 0), (255, 255, 255)]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("bert-base-uncased")


def _records(root, n=8) -> list[ImageCaptions]:
    recs = []
    for i in range(n):
        path = root / (f"{i}.png" if i % 2 else f"{i}.jpg")
        Image.new("RGB", (20 + i, 12), RGB[i]).save(path)
        k = 1 if i == 5 else 3  # image 5 has fewer captions than P
        caps = [f"a {COLORS[i]} square number {j}" for j in range(k)]
        recs.append(ImageCaptions(str(path), caps, i, "test"))
    return recs


class _Items:
    """The data set and its collator, indexed like the old data set: ``items[i]`` is item ``i``
    with the collator's draws (``PretrainCollator.draw``)."""

    def __init__(self, records, tok, seed=0, on_error="skip", **kw) -> None:
        self.dataset = PretrainDataset(records, on_error=on_error)
        self.collator = PretrainCollator(records, VisualParsingProcessor(tok, S, L), M,
                                         num_pos=P, num_neg=N, seed=seed, **kw)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.collator.draw(self.dataset[i])

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def _dataset(records, tok, **kw) -> _Items:
    return _Items(records, tok, **kw)


def _rows(tok, captions) -> set[tuple[int, ...]]:
    ids, _ = encode_texts(tok, captions, L)
    return {tuple(r) for r in ids.tolist()}


def _same(a: dict, b: dict) -> bool:
    return all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_item_shapes_and_mlm(tmp_path, tok):
    ds = _dataset(_records(tmp_path), tok, mlm_min_masked=1)
    item = ds[3]
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert item["input_ids"].shape == item["attention_mask"].shape == (P + N, L)
    assert item["mlm_input_ids"].shape == item["mlm_labels"].shape == (P, L)
    assert item["mfr_noise"].shape == (M,)
    assert ((item["mfr_noise"] >= 0) & (item["mfr_noise"] < 1)).all()
    assert item["index"] == 3 and item["skipped"] == []
    ids = special_ids(tok)
    labels, orig = item["mlm_labels"], item["input_ids"][:P]
    chosen = labels != -100
    assert chosen.any(dim=-1).all()  # every matched caption has an MLM target
    assert torch.equal(labels[chosen], orig[chosen])
    assert not (orig[chosen] == ids["sep"]).any() and not (orig[chosen] == ids["pad"]).any()
    assert torch.equal(item["mlm_input_ids"][~chosen], orig[~chosen])
    # the image is the record's, resized and normalised
    color = denormalize(item["image"]).mean(dim=(1, 2))
    assert torch.allclose(color, torch.tensor(RGB[3]) / 255.0, atol=0.03)


def test_items_deterministic_and_order_independent(tmp_path, tok):
    recs = _records(tmp_path)
    a, b = _dataset(recs, tok, seed=7), _dataset(recs, tok, seed=7)
    forward = [a[i] for i in range(len(a))]
    backward = [b[i] for i in reversed(range(len(b)))][::-1]
    assert all(_same(x, y) for x, y in zip(forward, backward, strict=True))
    other_seed = _dataset(recs, tok, seed=8)
    assert not all(_same(x, other_seed[i]) for i, x in enumerate(forward))


def test_epoch_changes_masks(tmp_path, tok):
    ds = _dataset(_records(tmp_path), tok)
    ds.set_epoch(0)
    e0 = [ds[i] for i in range(4)]
    ds.set_epoch(1)
    e1 = [ds[i] for i in range(4)]
    pairs = list(zip(e0, e1, strict=True))
    assert any(not torch.equal(x["mlm_labels"], y["mlm_labels"]) for x, y in pairs)
    assert all(not torch.equal(x["mfr_noise"], y["mfr_noise"]) for x, y in pairs)
    ds.set_epoch(0)
    assert _same(ds[2], e0[2])


def test_matched_and_unmatched_captions(tmp_path, tok):
    recs = _records(tmp_path)
    ds = _dataset(recs, tok)
    own = [_rows(tok, r.captions) for r in recs]
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            rows = [tuple(r) for r in ds[i]["input_ids"].tolist()]
            assert all(r in own[i] for r in rows[:P])
            if len(recs[i].captions) >= P:
                assert len(set(rows[:P])) == P  # distinct when the image has enough captions
            for r in rows[P:]:
                assert r not in own[i] and any(r in own[j] for j in range(len(recs)) if j != i)


def test_bad_images_skipped_deterministically(tmp_path, tok):
    recs = _records(tmp_path)
    (tmp_path / "1.png").unlink()  # missing
    (tmp_path / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 3)  # corrupt
    ds = _dataset(recs, tok)
    item = ds[1]
    assert [p for p, _ in item["skipped"]] == [recs[1].image_path, recs[2].image_path]
    assert "not found" in item["skipped"][0][1]
    assert item["index"] == 1
    # replaced by image 3 with its own captions; negatives are not image 3's
    assert torch.equal(item["image"], image_transform(S)(load_image(recs[3].image_path)))
    rows = [tuple(r) for r in item["input_ids"].tolist()]
    assert all(r in _rows(tok, recs[3].captions) for r in rows[:P])
    assert not any(r in _rows(tok, recs[3].captions) for r in rows[P:])
    assert _same(item, _dataset(recs, tok)[1])
    assert [p for p, _ in ds[2]["skipped"]] == [recs[2].image_path]

    batch = ds.collator([ds.dataset[i] for i in range(4)])
    assert batch["input_ids"].shape == (4, P + N, L)
    assert batch["image"].shape == (4, 3, S, S) and batch["mfr_noise"].shape == (4, M)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert [p for p, _ in batch["skipped"]] == [recs[1].image_path, recs[2].image_path,
                                                recs[2].image_path]

    strict = PretrainDataset(recs, on_error="raise")
    with pytest.raises(BadImageError, match="1.png"):
        strict[1]
    with pytest.raises(BadImageError, match=r"2\.jpg: corrupt"):
        strict[2]


def test_truncated_image_is_bad(tmp_path):
    path = tmp_path / "t.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError) as info:
        load_image(path)
    assert info.value.path == str(path) and info.value.reason


def test_constructor_checks(tmp_path, tok):
    recs = _records(tmp_path, n=2)
    with pytest.raises(ValueError, match="on_error"):
        _dataset(recs, tok, on_error="ignore")
    with pytest.raises(ValueError, match="no caption"):
        _dataset([*recs, ImageCaptions("x.jpg", [], 9, "t")], tok)
    with pytest.raises(ValueError, match="at least 2 images"):
        _dataset(recs[:1], tok)
    with pytest.raises(ValueError, match="negatives"):
        _dataset(recs, tok, negatives="hard")


def test_dataloader_workers_give_the_same_batches(tmp_path, tok):
    from torch.utils.data import DataLoader

    from vlparse.data.sampler import ResumableSampler

    recs = _records(tmp_path)
    (tmp_path / "4.jpg").unlink()
    ds = _dataset(recs, tok, seed=3)
    sampler = ResumableSampler(len(ds), 2, seed=1)
    loaded = list(DataLoader(ds.dataset, batch_sampler=sampler, num_workers=2,
                             collate_fn=ds.collator))
    direct = [ds.collator([ds.dataset[i] for i in batch]) for batch in sampler]
    assert len(loaded) == len(direct) == 4
    assert all(_same(a, b) for a, b in zip(loaded, direct, strict=True))
    assert sum(len(b["skipped"]) for b in loaded) == 1


def _lender_rows(batch_items, group):
    """For each item and unmatched slot: the (group item, matched slot) whose text it holds."""
    found = {}
    for a, item in enumerate(batch_items):
        g0 = a - a % group
        for n in range(N):
            text = item["texts"][P + n]
            found[a, n] = [(b, n % P) for b in range(g0, min(g0 + group, len(batch_items)))
                           if batch_items[b]["texts"][n % P] == text]
    return found


def test_batch_negatives_are_the_matched_captions_of_the_group(tmp_path, tok):
    recs = _records(tmp_path)
    ds = _dataset(recs, tok)
    items = [ds[i] for i in range(8)]
    before = [dict(it) for it in items]
    rejects = ds.collator.rejects
    lent = lend_batch_negatives(items, num_pos=P, group=4, rejects=rejects)
    assert all(_same(x, y) for x, y in zip(items, before, strict=True))  # inputs untouched
    found = _lender_rows(lent, 4)
    for a, item in enumerate(lent):
        assert torch.equal(item["input_ids"][:P], items[a]["input_ids"][:P])
        for n in range(N):
            (b, slot), = found[a, n]  # exactly one lender, in a's group, at matched slot n % P
            assert b != a and b // 4 == a // 4
            for k in ("input_ids", "attention_mask"):
                assert torch.equal(item[k][P + n], items[b][k][slot])
            assert normalize_caption(item["texts"][P + n]) not in _own(recs[a])
        for k in ("mlm_input_ids", "mlm_labels", "mfr_noise"):  # the matched side is untouched
            assert torch.equal(item[k], items[a][k])
    for n in range(N):  # every matched caption is lent once per slot
        assert sorted(b for a in range(8) for b, _ in found[a, n]) == list(range(8))
    # the same batch cut in two shares of whole groups (two processes) gives the same items
    halves = (lend_batch_negatives(items[:4], P, 4, rejects)
              + lend_batch_negatives(items[4:], P, 4, rejects))
    assert all(_same(x, y) for x, y in zip(halves, lent, strict=True))


def test_batch_negatives_never_lend_an_own_caption(tmp_path, tok):
    recs = _records(tmp_path, n=4)
    recs[1] = ImageCaptions(recs[1].image_path, recs[0].captions, 1, "test")  # same captions
    ds = _dataset(recs, tok)
    items = [{**ds[i], "batch_key": 0.1 * (i + 1)} for i in range(4)]  # cycle 0, 1, 2, 3
    lent = lend_batch_negatives(items, P, 4, ds.collator.rejects)
    for a in range(4):
        for n in range(N):
            assert normalize_caption(lent[a]["texts"][P + n]) not in _own(recs[a])
    # slot 0: 0 would take from 1, whose captions are 0's own, so it keeps the data set's draw
    assert lent[0]["texts"][P] == items[0]["texts"][P]
    assert torch.equal(lent[0]["input_ids"][P], items[0]["input_ids"][P])
    assert lent[2]["texts"][P] == items[3]["texts"][0]  # others take from the next one
    assert normalize_caption("There is  one Star.") == "there is one star"


def test_collate_with_batch_negatives(tmp_path, tok):
    recs = _records(tmp_path)
    lending, plain = _dataset(recs, tok, negatives="batch", group=3), _dataset(recs, tok)
    items = [lending.dataset[i] for i in range(6)]
    batch, drawn = lending.collator(items), plain.collator(items)
    assert batch["input_ids"].shape == (6, P + N, L)
    for k in ("image", "mlm_input_ids", "mlm_labels", "mfr_noise", "index"):
        assert torch.equal(batch[k], drawn[k]), k
    assert torch.equal(batch["input_ids"][:, :P], drawn["input_ids"][:, :P])
    assert not torch.equal(batch["input_ids"][:, P:], drawn["input_ids"][:, P:])
    assert "batch_key" not in batch
    with pytest.raises(ValueError, match="group"):
        lend_batch_negatives([lending[i] for i in range(3)], P, 1, lending.collator.rejects)
    with pytest.raises(ValueError, match="group"):
        _dataset(recs, tok, negatives="batch", group=1)
    assert stack_items(items)["index"].tolist() == list(range(6))


def _own(record: ImageCaptions) -> set[str]:
    return {normalize_caption(c) for c in record.captions}


def _varied_records(root) -> list[ImageCaptions]:
    """Five images with 1, 2, 3, 4 and 7 captions."""
    recs = []
    for i, k in enumerate((1, 2, 3, 4, 7)):
        path = root / f"v{i}.png"
        Image.new("RGB", (12, 12), RGB[i]).save(path)
        recs.append(ImageCaptions(str(path), [f"{COLORS[i]} caption {j}" for j in range(k)], i,
                                  "test"))
    return recs


def test_an_epoch_of_pairs_visits_each_image_once_per_num_pos_captions(tmp_path, tok):
    recs = _varied_records(tmp_path)
    assert len(PretrainDataset(recs)) == 5  # images: one item an image
    pairs = PretrainDataset(recs, epoch_unit="pairs", num_pos=P)
    # ceil(n / 2) visits for n = 1, 2, 3, 4, 7 captions
    assert len(pairs) == 1 + 1 + 2 + 2 + 4
    assert [pairs[i]["record"] for i in range(len(pairs))] == [0, 1, 2, 2, 3, 3, 4, 4, 4, 4]
    assert [pairs[i]["visit"] for i in range(len(pairs))] == [0, 0, 0, 1, 0, 1, 0, 1, 2, 3]
    assert "visit" not in PretrainDataset(recs)[0]
    assert len(PretrainDataset(recs, epoch_unit="pairs", num_pos=3)) == 1 + 1 + 1 + 2 + 3
    with pytest.raises(IndexError):
        pairs[10]
    with pytest.raises(ValueError, match="epoch_unit"):
        PretrainDataset(recs, epoch_unit="captions")


def test_the_visits_of_an_epoch_share_out_the_captions(tmp_path, tok):
    recs = _varied_records(tmp_path)
    data = PretrainDataset(recs, epoch_unit="pairs", num_pos=P)
    collator = PretrainCollator(recs, VisualParsingProcessor(tok, S, L), M, num_pos=P,
                                num_neg=N, seed=3)
    for epoch in (0, 1):
        data.set_epoch(epoch)
        seen: dict[int, list[str]] = {}
        for i in range(len(data)):
            item = data[i]
            seen.setdefault(item["record"], []).extend(
                collator._texts(item, torch.Generator().manual_seed(i))[:P])
        for j, texts in seen.items():
            captions = recs[j].captions
            # every caption of the image is matched once an epoch; an odd count adds one repeat
            assert sorted(set(texts)) == sorted(captions), j
            assert len(texts) == P * -(-len(captions) // P)
    # the batch items of a pairs epoch: each visit its own seed, the same record
    items = [collator.draw(data[i]) for i in (6, 7)]
    assert items[0]["record"] == items[1]["record"] == 4
    assert not set(items[0]["texts"][:P]) & set(items[1]["texts"][:P])
