"""Self-contained models: save_pretrained / from_pretrained, the processor, create_model."""

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
from vlparse.models.processor import VisualParsingProcessor
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.vp_tasks import VisualParsingForQuestionAnswering
from vlparse.processing.tokenization import build_tokenizer

SRC = str(Path(__file__).resolve().parents[2] / "src")
SMALL = ["model.visual.embed_dim=16", "model.visual.num_heads=[2]", "model.text.hidden_size=32",
         "model.text.num_layers=1", "model.text.num_heads=2", "model.text.intermediate_size=64",
         "model.text.max_text_len=12", "objectives.mfr_k=5"]
TEXTS = ["a red circle left of a blue square", "two small triangles"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained-looking model (random weights, changed from their init) and its processor."""
    cfg = load_config("tiny", SMALL)
    processor = VisualParsingProcessor.from_config(cfg.model)
    ids = processor.special_ids
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, ids["vocab_size"], ids["cls"], ids["sep"],
                               objectives=cfg.objectives).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(folder, processor=processor)
    return model, processor, folder


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (50, 40), (200, 30, 30)), Image.new("RGB", (64, 64), (10, 10, 220))]


def _outputs(model, processor) -> torch.Tensor:
    batch = processor(images=_images(), text=TEXTS)
    with torch.no_grad():
        return model(batch["image"], batch["input_ids"], batch["attention_mask"]).last_hidden_state


def test_folder_contents_are_plain_data_without_paths(saved):
    model, processor, folder = saved
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json",
            "tokenizer_config.json"} <= names
    assert not any(n.endswith((".pt", ".pkl", ".bin")) for n in names)  # no pickle
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == "visual_parsing"
    assert config["architecture"] == "VisualParsingModel"
    assert config["vocab_size"] == model.vocab_size == 30522
    assert config["special_ids"] == {"cls": 101, "sep": 102, "pad": 0, "mask": 103}
    assert config["model"]["text"]["hidden_size"] == 32
    assert config["objectives"]["mfr_k"] == 5
    assert config["model"]["text"]["tokenizer"] == "."  # the tokenizer saved beside it

    def strings(node):
        if isinstance(node, dict):
            return [s for v in node.values() for s in strings(v)]
        if isinstance(node, list):
            return [s for v in node for s in strings(v)]
        return [node] if isinstance(node, str) else []

    assert not any(Path(s).is_absolute() for s in strings(config))


def test_round_trip_in_process(saved):
    model, processor, folder = saved
    loaded = VisualParsingModel.from_pretrained(folder)
    assert not loaded.training and loaded.objectives.mfr_k == 5
    assert loaded.cfg.text.tokenizer == str(folder.resolve())
    # the tied decoder survives, and every tensor is equal
    assert loaded.mlm_head.decoder.weight is loaded.text_embed.word_embeddings.weight
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    again = VisualParsingProcessor.from_pretrained(folder)
    assert (again.image_size, again.max_text_len) == (processor.image_size, processor.max_text_len)
    torch.testing.assert_close(_outputs(loaded, again), _outputs(model, processor), rtol=0, atol=0)


def test_moved_folder_loads_in_a_fresh_process(saved, tmp_path):
    """Save, move the folder, delete the original, load with nothing else in a new process."""
    model, processor, folder = saved
    original = tmp_path / "original"
    shutil.copytree(folder, original)
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.move(str(original), str(moved))
    assert not original.exists()
    out_file = tmp_path / "outputs.pt"
    script = (
        "import sys, torch\n"
        "from PIL import Image\n"
        "from vlparse.models import VisualParsingModel, VisualParsingProcessor\n"
        "folder, out = sys.argv[1], sys.argv[2]\n"
        "model = VisualParsingModel.from_pretrained(folder)\n"
        "proc = VisualParsingProcessor.from_pretrained(folder)\n"
        "images = [Image.new('RGB', (50, 40), (200, 30, 30)),"
        " Image.new('RGB', (64, 64), (10, 10, 220))]\n"
        f"batch = proc(images=images, text={TEXTS!r})\n"
        "with torch.no_grad():\n"
        "    h = model(batch['image'], batch['input_ids'], batch['attention_mask'])\n"
        "torch.save(h.last_hidden_state, out)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(moved), str(out_file)], env=env,
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = torch.load(out_file, weights_only=True)
    torch.testing.assert_close(fresh, _outputs(model, processor), rtol=0, atol=0)


def test_processor_builds_the_text_part_without_cls(saved):
    _, processor, _ = saved
    tok = build_tokenizer("bert-base-uncased")
    batch = processor(text=TEXTS)
    assert batch["input_ids"].shape == (2, 12) and "image" not in batch
    words = tok(TEXTS[1], add_special_tokens=False)["input_ids"]
    assert batch["input_ids"][1, : len(words) + 1].tolist() == [*words, 102]  # W, then [SEP]
    assert batch["attention_mask"][1].tolist() == [1] * (len(words) + 1) + [0] * (11 - len(words))
    assert (batch["input_ids"][:, 0] != 101).all()
    short = processor(text=TEXTS, padding="longest")
    assert short["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())
    images = processor(images=_images()[0])["image"]
    assert images.shape == (1, 3, 96, 96)
    with pytest.raises(ValueError, match="give images, text or both"):
        processor()


def test_from_pretrained_errors(saved, tmp_path):
    _, _, folder = saved
    with pytest.raises(FileNotFoundError, match="config.json"):
        VisualParsingModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a VisualParsingForQuestionAnswering"):
        VisualParsingForQuestionAnswering.from_pretrained(folder)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["model"]["text"]["num_layers"] = 2
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="does not match"):
        VisualParsingModel.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        VisualParsingProcessor.from_pretrained(tmp_path)


def test_create_model_from_a_folder(saved):
    model, processor, folder = saved
    loaded = vlparse.create_model("tiny", pretrained=folder)
    torch.testing.assert_close(_outputs(loaded, processor), _outputs(model, processor))
    with pytest.raises(ValueError, match="holds a 'tiny' model, not 'paper'"):
        vlparse.create_model("paper", pretrained=folder)
    with pytest.raises(ValueError, match="fixes its architecture"):
        vlparse.create_model("tiny", pretrained=folder, text={"num_layers": 3})


def test_create_model_pretrained_true_loads_the_configured_sources(tmp_path):
    from safetensors.torch import save_file

    donor = vlparse.create_model("tiny", vocab_size=300)
    weights = tmp_path / "parser.safetensors"
    save_file(donor.visual.model.state_dict(), str(weights))
    torch.manual_seed(1)
    model = vlparse.create_model("tiny", pretrained=True, vocab_size=300,
                                 visual={"pretrained": str(weights)})
    for name, value in donor.visual.model.state_dict().items():
        assert torch.equal(model.visual.model.state_dict()[name], value), name
    torch.manual_seed(1)
    fresh = vlparse.create_model("tiny", vocab_size=300, visual={"pretrained": str(weights)})
    assert not torch.equal(fresh.visual.model.patch_embed.proj.weight,
                           donor.visual.model.patch_embed.proj.weight)  # False: no I/O
    with pytest.raises(ValueError, match="names no initialisation source"):
        vlparse.create_model("tiny", pretrained=True, vocab_size=300)
