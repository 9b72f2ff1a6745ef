"""A self-contained FIBER model: save_pretrained / from_pretrained (in a fresh process, from a
moved folder), the processor (whole sequences), create_model by name, the offline tokenizer
error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import vlparse
from vlparse.config import load_config
from vlparse.errors import ConfigError
from vlparse.models.fiber import FiberModel, FiberProcessor
from vlparse.models.loading import load_pretrained_model
from vlparse.models.processor import VisualParsingProcessor
from vlparse.processing.tokenization import build_tokenizer

SRC = str(Path(__file__).resolve().parents[3] / "src")
SMALL = ["model.visual.embed_dim=16", "model.visual.num_heads=[1,2]",
         "model.text.pretrained=null", "model.text.hidden_size=32", "model.text.num_layers=2",
         "model.text.num_heads=2", "model.text.intermediate_size=64", "model.text.max_text_len=12",
         "model.fusion.num_layers=2", "model.hidden_size=16", "model.itc_dim=8",
         "objectives.hard_negative_exclude=pair", "objectives.itc_queue_size=4",
         "objectives.itc_temperature_max=0.5"]
TEXTS = ["a red circle left of a blue square", "two small triangles"]
SCRIPT = """
import sys, torch
from PIL import Image
from vlparse.models.fiber import FiberModel, FiberProcessor
folder, out = sys.argv[1], sys.argv[2]
model, processor = FiberModel.from_pretrained(folder), FiberProcessor.from_pretrained(folder)
images = [Image.new('RGB', (50, 40), (200, 30, 30)), Image.new('RGB', (64, 64), (10, 10, 220))]
batch = processor(images=images, text={texts!r})
with torch.no_grad():
    fused = model(batch['image'], batch['input_ids'], batch['attention_mask'])
    text = model.encode_text(batch['input_ids'], batch['attention_mask']).embeds
    mlm = model.mlm_logits(fused.text_hidden_state)
torch.save({{'pooled': fused.pooler_output, 'text': text, 'mlm': mlm,
            'ids': batch['input_ids']}}, out)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small fiber_tiny (random weights moved from their init, open gates, a trained
    temperature) and its processor, saved."""
    cfg = load_config("fiber_tiny", SMALL)
    processor = FiberProcessor.from_config(cfg.model)
    torch.manual_seed(0)
    model = FiberModel(cfg.model, cfg.objectives).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.itc.temperature.fill_(0.05)
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(folder, processor=processor)
    return model, processor, folder


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (50, 40), (200, 30, 30)), Image.new("RGB", (64, 64), (10, 10, 220))]


def _outputs(model, processor) -> dict[str, torch.Tensor]:
    batch = processor(images=_images(), text=TEXTS)
    with torch.no_grad():
        fused = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"]).embeds
        return {"pooled": fused.pooler_output, "text": text,
                "mlm": model.mlm_logits(fused.text_hidden_state), "ids": batch["input_ids"]}


def test_folder_holds_plain_data_without_paths(saved):
    _, _, folder = saved
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json"} <= names
    assert not any(n.endswith((".pt", ".pkl", ".bin")) for n in names)
    config = json.loads((folder / "config.json").read_text())
    assert (config["family"], config["architecture"]) == ("fiber", "FiberModel")
    assert config["vocab_size"] == 30522
    assert config["special_ids"] == {"cls": 101, "sep": 102, "pad": 0, "mask": 103}
    assert config["objectives"] == {
        "itc_temperature": 0.07, "itc_temperature_min": 0.001, "itc_temperature_max": 0.5,
        "itc_queue_size": 4, "itm_negatives": "hard", "hard_negative_pool": "gathered",
        "hard_negative_exclude": "pair"}
    text = config["model"]["text"]
    assert text["tokenizer"] == "." and text["pretrained"] is None
    assert config["model"]["visual"]["pretrained"] is None
    assert "/" not in json.dumps(config["model"])  # no path of this machine
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith("itc_queue.") for k in keys)  # the queue is not saved
    assert "itc.temperature" in keys


def test_round_trip_in_process(saved):
    model, processor, folder = saved
    loaded = FiberModel.from_pretrained(folder)
    assert not loaded.training and loaded.objectives == model.objectives
    assert float(loaded.itc.temperature.detach()) == pytest.approx(0.05)  # the trained value
    decoder = loaded.mlm_head.predictions.decoder
    assert decoder.weight is loaded.text.word_embeddings.weight  # still tied
    assert decoder.bias is loaded.mlm_head.predictions.bias
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    again = FiberProcessor.from_pretrained(folder)
    ours, theirs = _outputs(model, processor), _outputs(loaded, again)
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=0)


def test_moved_folder_loads_in_a_fresh_process(saved, tmp_path):
    model, processor, folder = saved
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(folder, tmp_path / "copy")
    shutil.move(str(tmp_path / "copy"), str(moved))
    out = tmp_path / "outputs.pt"
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(texts=TEXTS), str(moved),
                           str(out)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = torch.load(out, weights_only=True)
    for key, value in _outputs(model, processor).items():
        torch.testing.assert_close(fresh[key], value, rtol=0, atol=0)


def test_create_model_and_the_loader_know_fiber(saved):
    model, processor, folder = saved
    assert isinstance(load_pretrained_model(folder), FiberModel)
    loaded = vlparse.create_model("fiber_tiny", pretrained=folder)
    torch.testing.assert_close(_outputs(loaded, processor)["pooled"],
                               _outputs(model, processor)["pooled"])
    with pytest.raises(ValueError, match="holds a 'fiber_tiny' model, not 'fiber_base'"):
        vlparse.create_model("fiber_base", pretrained=folder)
    with pytest.raises(ValueError, match="model.text.vocab_size"):
        vlparse.create_model("fiber_tiny", vocab_size=100)
    with pytest.raises(ValueError, match="not FIBER's"):
        VisualParsingProcessor(build_tokenizer(), 96, 12).save_pretrained(folder.parent / "vp")
        FiberProcessor.from_pretrained(folder.parent / "vp")


def test_processor_makes_whole_sequences(saved):
    _, processor, _ = saved
    words = build_tokenizer()(TEXTS[1], add_special_tokens=False)["input_ids"]
    batch = processor(text=TEXTS)
    assert batch["input_ids"].shape == (2, 12) and "image" not in batch
    k = len(words) + 2
    assert batch["input_ids"][1, :k].tolist() == [101, *words, 102]  # [CLS] words [SEP]
    assert batch["input_ids"][1, k:].eq(0).all()
    assert batch["attention_mask"][1].tolist() == [1] * k + [0] * (12 - k)
    long = processor(text=["word " * 30])["input_ids"][0]  # cut to 12, [SEP] kept
    assert long.shape == (12,) and long[0] == 101 and long[-1] == 102
    short = processor(text=TEXTS, padding="longest")["input_ids"]
    assert short.shape[1] == int(batch["attention_mask"].sum(1).max())
    image = processor(images=_images()[0])["image"]
    assert image.shape == (1, 3, 96, 96)


def test_an_unavailable_tokenizer_names_the_override(monkeypatch):
    import huggingface_hub
    import transformers

    def offline(*_args, **_kwargs):
        raise OSError("no internet and not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    cfg = load_config("fiber_base")
    with pytest.raises(ConfigError, match=r"roberta-base.*model\.text\.tokenizer=<local folder>"):
        FiberProcessor.from_config(cfg.model)
