"""``vlparse.load``: every method's return type on tiny runs, wrong-task errors, images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import vlparse
from vlparse.api import VLModel
from vlparse.config import FinetuneConfig, load_config
from vlparse.data.finetune import finetune_records
from vlparse.data.manifest import load_manifest
from vlparse.errors import WrongTaskError

FAST = ["model.visual.image_size=64", "model.visual.window_size=4", "train.max_steps=1"]


def _finetuned(task: str, recipe: str, scene_world: Path, small_overrides, out: Path) -> Path:
    """A fine-tuning run folder as ``vlparse finetune`` writes it (config, task state,
    checkpoint, no exported model) of a freshly built model: what the loader rebuilds from a
    checkpoint, without training."""
    import yaml

    from vlparse.config import to_dict
    from vlparse.tasks.base import get_task
    from vlparse.tasks.finetune import FinetuneTask
    from vlparse.train.checkpoint import save_checkpoint

    overrides = [o for o in small_overrides if not o.startswith("objectives.")] + FAST
    cfg = load_config(recipe, overrides, cls=FinetuneConfig)
    ft = FinetuneTask(get_task(task), cfg, load_manifest(scene_world), log=None)
    torch.manual_seed(0)
    model = ft.build_model()
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    for name, text in ft.run_files().items():
        (out / name).write_text(text)
    save_checkpoint(out, 1, model, None, None, {"step": 1})
    return out


@pytest.fixture(scope="module")
def runs(scene_world, small_overrides, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("api_runs")
    return {t: _finetuned(t, r, scene_world, small_overrides, base / r)
            for t, r in (("vqa", "vqa_world"), ("nlvr2", "nlvr2_world"),
                         ("snli-ve", "snli_ve_world"), ("retrieval", "retrieval_world"))}


@pytest.fixture(scope="module")
def examples(scene_world):
    manifest = load_manifest(scene_world)
    return {
        "vqa": finetune_records(manifest, "vqa", "val")[0],
        "nlvr2": finetune_records(manifest, "nlvr2", "dev")[0],
        "snli": finetune_records(manifest, "snli_ve", "dev")[0],
    }


def test_answer_entail_reason_types(runs, examples):
    q = examples["vqa"]
    vqa = vlparse.load(runs["vqa"], device="cpu")
    assert isinstance(vqa, VLModel) and vqa.task == "vqa" and not vqa.model.training
    top = vqa.answer(q.image_path, q.question, topk=3)
    assert len(top) == 3 and all(isinstance(a, str) and isinstance(p, float) for a, p in top)
    assert all(a in vqa.labels for a, _ in top) and len(vqa.labels) > 3
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert all(0.0 <= p <= 1.0 for _, p in top)
    # a PIL image gives the same answer as its path
    pil = Image.open(q.image_path)
    assert vqa.answer(pil, q.question, topk=3) == top

    s = examples["snli"]
    probs = vlparse.load(runs["snli-ve"], device="cpu").entail(s.image_path, s.hypothesis)
    assert list(probs) == ["entailment", "neutral", "contradiction"]
    assert sum(probs.values()) == pytest.approx(1.0)

    n = examples["nlvr2"]
    nlvr2 = vlparse.load(runs["nlvr2"], device="cpu")
    p = nlvr2.reason(n.left_image, n.right_image, n.sentence)
    assert isinstance(p, float) and 0.0 <= p <= 1.0
    swapped = nlvr2.reason(n.right_image, n.left_image, n.sentence)
    assert swapped != p  # both images reach the classifier, in order

    # a wrong task is named with what to load instead
    with pytest.raises(WrongTaskError, match=r"answer\(\) needs a model fine-tuned with "
                       r"'vlparse finetune vqa'.*is a nlvr2 model"):
        nlvr2.answer(n.left_image, "what?")
    with pytest.raises(WrongTaskError, match="reason"):
        vqa.reason(n.left_image, n.right_image, n.sentence)
    with pytest.raises(WrongTaskError, match="score"):
        vqa.score([q.image_path], ["a caption"])
    with pytest.raises(TypeError, match="PIL images or paths"):
        vqa.answer(torch.zeros(3, 64, 64), "what?")


def test_score_and_rank(runs, examples):
    model = vlparse.load(runs["retrieval"], device="cpu")
    image = examples["snli"].image_path
    texts = ["a red square above a blue circle", "a green star", "two yellow triangles"]
    scores = model.score([image] * 3, texts)
    assert isinstance(scores, torch.Tensor) and scores.shape == (3,)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(model.score(image, texts), scores)  # one image, broadcast
    ranked = model.rank(image, texts)
    assert sorted(t for t, _ in ranked) == sorted(texts)
    values = [s for _, s in ranked]
    assert values == sorted(values, reverse=True)
    # rank's cached-parser scores equal score's
    for t, s in ranked:
        assert s == pytest.approx(float(scores[texts.index(t)]), abs=1e-4)
    with pytest.raises(ValueError, match="aligned lists"):
        model.score([image] * 2, texts)
    with pytest.raises(WrongTaskError, match="vqa"):
        model.answer(image, "what?")
    with pytest.raises(FileNotFoundError):
        vlparse.load(runs["vqa"].parent / "missing")


def test_pretraining_run_scores_with_its_itm_head(small_overrides, examples, tmp_path):
    import yaml

    from vlparse.config import to_dict
    from vlparse.models.single_stream import VisualParsingModel
    from vlparse.processing.tokenization import build_tokenizer, encode_texts
    from vlparse.processing.transforms import image_transform
    from vlparse.train.checkpoint import save_checkpoint

    cfg = load_config("tiny", [*small_overrides, *FAST[:2]])
    tokenizer = build_tokenizer(cfg.model.text.tokenizer)
    torch.manual_seed(0)
    net = VisualParsingModel(cfg.model, len(tokenizer), cls_token_id=tokenizer.cls_token_id,
                             sep_token_id=tokenizer.sep_token_id)
    torch.nn.init.normal_(net.itm_head.fc.weight)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    save_checkpoint(tmp_path, 1, net, None, None, {"step": 1})

    model = vlparse.load(tmp_path, device="cpu")
    assert model.task == "pretrain"
    image, texts = examples["snli"].image_path, ["a green star", "a red circle"]
    got = model.score(image, texts)
    net.eval()
    pil = Image.open(image).convert("RGB")
    images = image_transform(cfg.model.visual.image_size)(pil)[None].expand(2, -1, -1, -1)
    ids, mask = encode_texts(tokenizer, texts, cfg.model.text.max_text_len)
    with torch.no_grad():
        logits = net.itm_head(net(images, ids, mask).cls)
    torch.testing.assert_close(got, logits[:, 1] - logits[:, 0], atol=1e-4, rtol=1e-4)
    assert [t for t, _ in model.rank(image, texts)] == sorted(texts, key=lambda t: -float(
        got[texts.index(t)]))
    with pytest.raises(WrongTaskError, match="snli-ve.*is a pretrain model"):
        model.entail(image, "a star")


def test_batches_and_single_items_agree(runs, examples):
    vqa = vlparse.load(runs["vqa"], device="cpu")
    a, b = examples["vqa"], examples["snli"]
    images, questions = [a.image_path, b.image_path], [a.question, "what shape is it?"]
    batch = vqa.answer(images, questions, topk=2)
    assert len(batch) == 2
    for got, image, question in zip(batch, images, questions, strict=True):
        one = vqa.answer(image, question, topk=2)
        assert [x for x, _ in got] == [x for x, _ in one]
        assert [p for _, p in got] == pytest.approx([p for _, p in one], abs=1e-5)

    snli = vlparse.load(runs["snli-ve"], device="cpu")
    probs = snli.entail([b.image_path] * 2, [b.hypothesis, "a dog"])
    assert len(probs) == 2 and all(sum(p.values()) == pytest.approx(1.0) for p in probs)
    assert probs[0] == pytest.approx(snli.entail(b.image_path, b.hypothesis), abs=1e-5)

    n = examples["nlvr2"]
    nlvr2 = vlparse.load(runs["nlvr2"], device="cpu")
    both = nlvr2.reason([n.left_image, n.right_image], [n.right_image, n.left_image],
                        n.sentence)
    assert both == pytest.approx([nlvr2.reason(n.left_image, n.right_image, n.sentence),
                                  nlvr2.reason(n.right_image, n.left_image, n.sentence)],
                                 abs=1e-5)

    ret = vlparse.load(runs["retrieval"], device="cpu")
    texts = ["a green star", "two red circles"]
    ranked = ret.rank([a.image_path, b.image_path], texts)
    assert len(ranked) == 2 and ranked[1] == ret.rank(b.image_path, texts)


def test_sixteen_bit_images_are_scaled_not_clipped(runs):
    """A 16-bit grey image answers as its 8-bit version (v * 257 -> v), not as the white image
    that clipping its values to 255 would make."""
    import numpy as np

    vqa = vlparse.load(runs["vqa"], device="cpu")
    grey = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint16)
    eight = Image.fromarray(grey.astype(np.uint8), mode="L")
    sixteen = Image.fromarray(grey * 257)
    assert sixteen.mode == "I;16"
    white = Image.new("L", (64, 64), 255)
    question = "what color is the circle?"
    got = vqa.answer(sixteen, question, topk=3)
    assert got == vqa.answer(eight, question, topk=3)
    assert got != vqa.answer(white, question, topk=3)


def test_a_damaged_saved_model_is_a_user_error(runs, tmp_path, capsys):
    """A truncated weights file or a broken config.json in a saved model folder is a
    CheckpointError naming the folder; the command line reports it in one line."""
    import shutil

    from vlparse.cli import main
    from vlparse.errors import CheckpointError

    folder = tmp_path / "model"
    vlparse.load(runs["vqa"], device="cpu").model.save_pretrained(folder)
    assert vlparse.load(folder, device="cpu").task == "vqa"
    broken = tmp_path / "truncated"
    shutil.copytree(folder, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated: cannot be loaded as a saved model"):
        vlparse.load(broken, device="cpu")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        vlparse.load(folder, device="cpu")
    argv = ["evaluate", "vqa", "--checkpoint", str(folder), "--data", "m.json", "--split", "val",
            "--out", str(tmp_path / "x.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlparse: error: ") and "config.json" in err[0]


FIBER_SMALL = ["model.visual.embed_dim=16", "model.visual.num_heads=[1,2]",
               "model.text.pretrained=null", "model.text.hidden_size=32",
               "model.text.num_layers=2", "model.text.num_heads=2",
               "model.text.intermediate_size=64", "model.text.max_text_len=12",
               "model.fusion.num_layers=2", "model.hidden_size=16", "model.itc_dim=8"]


@pytest.fixture(scope="module")
def fiber_saved(tmp_path_factory):
    """A small FIBER pre-trained model with open gates and its processor, saved; and a
    retrieval model fine-tuned from it (a new head), saved."""
    from vlparse.config.finetune import RetrievalTaskConfig
    from vlparse.models.fiber import FiberModel, FiberProcessor
    from vlparse.models.fiber.tasks import FiberForImageAndTextRetrieval

    cfg = load_config("fiber_tiny", FIBER_SMALL)
    processor = FiberProcessor.from_config(cfg.model)
    torch.manual_seed(0)
    net = FiberModel(cfg.model, cfg.objectives).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        net.itm_head.fc.weight.normal_(0, 1.0)
    base = tmp_path_factory.mktemp("fiber_api")
    net.save_pretrained(base / "pre", processor=processor)
    ft = FiberForImageAndTextRetrieval.from_backbone(net, RetrievalTaskConfig(), pretrained=True)
    torch.nn.init.normal_(ft.head.fc.weight)
    ft.save_pretrained(base / "ft", processor=processor)
    return base / "pre", base / "ft"


@pytest.mark.parametrize("which", [0, 1], ids=["pretrained", "retrieval"])
def test_fiber_rank_is_itc_then_itm(fiber_saved, examples, which):
    model = vlparse.load(fiber_saved[which], device="cpu")
    assert model.task == ("pretrain", "retrieval")[which]
    image = examples["snli"].image_path
    texts = ["a red square", "a green star left of a circle", "two yellow triangles",
             "a blue circle", "a small purple square above a star", "three shapes"]
    scores = model.score(image, texts)  # the fused ITM margin of each pair
    full = model.rank(image, texts, rerank_k=0)
    assert [t for t, _ in full] == sorted(texts, key=lambda t: -float(scores[texts.index(t)]))
    # two stages: ITC (the dual encoder, computed here by the backbone itself) picks the top k
    net = model.model if which == 0 else model.model.backbone
    pixels = model.processor.image(image)[None]
    ids, mask = model.processor.encode_text(texts, padding="longest")
    with torch.no_grad():
        itc = (net.encode_image(pixels).embeds @ net.encode_text(ids, mask).embeds.t())[0]
    k = 3
    top = {texts[i] for i in itc.topk(k).indices.tolist()}
    ranked = model.rank(image, texts, rerank_k=k)
    head, tail = ranked[:k], ranked[k:]
    assert {t for t, _ in head} == top
    assert [t for t, _ in head] == sorted(top, key=lambda t: -float(scores[texts.index(t)]))
    for t, s in head:
        assert s == pytest.approx(float(scores[texts.index(t)]), abs=1e-4)
    assert [t for t, _ in tail] == sorted(set(texts) - top,
                                          key=lambda t: -float(itc[texts.index(t)]))
    assert all(s == float("-inf") for _, s in tail)
    assert model.rank(image, texts) == full  # default k = 128 > 6 texts: every text scored
