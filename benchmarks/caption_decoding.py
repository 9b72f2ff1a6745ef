"""Caption decoding speed on the CPU: beam search with and without the key/value cache.

    python benchmarks/caption_decoding.py --out caption_decoding_cpu.json
    python benchmarks/caption_decoding.py --model ft/caption/model --out caption_decoding_cpu.json

The default decoder is FIBER's (:class:`vlparse.models.fiber.decoder.FiberCaptionDecoder`):
a captioning model saved by ``vlparse finetune caption`` (``--model``), or a freshly initialised
one of a model config (``--config``, default ``fiber_tiny``, with ``--set key=value``
overrides; no weights are read). With the cache, each fused layer's image keys/values are
computed once per image and each step feeds one token; without it, every step runs the whole
prefix and projects the image tokens again, as FIBER's released code decodes. The image
backbone runs once per batch on random images, outside the timed search. ``--decoder bert``
benchmarks transformers' ``BertLMHeadModel`` with cross-attention (sized by ``--layers``,
``--width``...) through ``EncoderDecoderCache``; ``--decoder package.module:factory`` any other
decoder that follows :class:`vlparse.models.generation.CaptionDecoder`: ``factory(args)``
returns ``(decoder, memory, batch_size)``.

Random weights rarely emit the end token, so most captions run to ``--max-length``: the time
of the longest captions (a trained model's captions end earlier; ``mean_length`` says). Reports
captions/s (median of ``--repeats`` runs) of each path, their ratio and whether both paths gave
the same captions, with the command, commit, hardware and date.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vlparse.models.generation import beam_search


class BertCaptionDecoder:
    """The decoding protocol over ``BertLMHeadModel`` with cross-attention (transformers 5)."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    def encode(self, image_tokens: Tensor) -> dict[str, Any]:
        """Image tokens ``(B, M, D)`` -> each layer's cross-attention keys/values, once per
        image: ``(B, H, M, D / H)``."""
        kv = []
        for layer in self.model.bert.encoder.layer:
            attn = layer.crossattention.self
            shape = (*image_tokens.shape[:2], -1, attn.attention_head_size)
            kv.append(
                tuple(
                    proj(image_tokens).view(shape).transpose(1, 2)
                    for proj in (attn.key, attn.value)
                )
            )
        return {"tokens": image_tokens, "kv": kv}

    def init_cache(self, memory: dict[str, Any], rows: Tensor) -> tuple[Any, Tensor]:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cross = DynamicCache(config=self.model.config)
        for i, (k, v) in enumerate(memory["kv"]):
            cross.update(k[rows], v[rows], i)
        # filled cross-attention layers are marked updated: BERT reads them instead of
        # projecting the image tokens again; it still needs the tokens to enter cross-attention
        cache = EncoderDecoderCache(DynamicCache(config=self.model.config), cross)
        return cache, memory["tokens"][rows]

    def step(self, input_ids: Tensor, state: tuple[Any, Tensor]) -> tuple[Tensor, Any]:
        cache, image = state
        out = self.model(
            input_ids=input_ids, encoder_hidden_states=image, cache=cache, use_cache=True
        )
        return out.logits[:, -1], (out.cache, image)

    def reorder(self, state: tuple[Any, Tensor], index: Tensor) -> tuple[Any, Tensor]:
        cache, image = state
        cache.self_attention_cache.reorder_cache(index)  # rows stay on their image
        return cache, image

    def full(self, input_ids: Tensor, memory: dict[str, Any], rows: Tensor) -> Tensor:
        image = memory["tokens"][rows]
        return self.model(input_ids=input_ids, encoder_hidden_states=image, use_cache=False).logits


def bert_decoder(args: argparse.Namespace) -> tuple[BertCaptionDecoder, Any, int]:
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(
        vocab_size=args.vocab,
        hidden_size=args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.width,
        max_position_embeddings=max(64, args.max_length + 2),
        is_decoder=True,
        add_cross_attention=True,
        attn_implementation="sdpa",
    )
    decoder = BertCaptionDecoder(BertLMHeadModel(config))
    with torch.no_grad():
        memory = decoder.encode(torch.randn(args.images, args.image_tokens, args.width))
    return decoder, memory, args.images


def fiber_decoder(args: argparse.Namespace) -> tuple[Any, Any, int]:
    """FIBER's caption decoder: the saved model ``--model``, or a fresh one of ``--config``."""
    from vlparse.models.fiber.captioning import FiberForCaptioning

    if args.model:
        model = FiberForCaptioning.from_pretrained(args.model)
    else:
        from vlparse.config import load_config
        from vlparse.config.finetune import CaptionTaskConfig
        from vlparse.models.fiber import FiberProcessor

        overrides = ["model.text.pretrained=null", "model.visual.pretrained=null",
                     *[f"model.{kv}" for kv in args.set]]
        cfg = load_config(args.config, overrides).model
        model = FiberForCaptioning.from_config(cfg, FiberProcessor.from_config(cfg),
                                               CaptionTaskConfig())
    model.eval()
    size = model.backbone.cfg.visual.image_size
    with torch.no_grad():
        memory = model.encode_images(torch.randn(args.images, 3, size, size))
    return model.decoder, memory, args.images


def load_factory(spec: str | None):
    if spec in (None, "fiber"):
        return fiber_decoder
    if spec == "bert":
        return bert_decoder
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--decoder", default="fiber",
                   help="fiber (default), bert, or package.module:factory")
    p.add_argument("--model", default=None, help="a saved FIBER captioning model (fiber)")
    p.add_argument("--config", default="fiber_tiny", help="model config of a fresh one (fiber)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the model config, e.g. text.num_layers=2 (fiber)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--max-length", type=int, default=50)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--image-tokens", type=int, default=144)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    factory = load_factory(args.decoder)
    decoder, memory, batch_size = factory(args)
    settings = dict(num_beams=args.beams, max_length=args.max_length)
    seconds, outputs = {}, {}
    for name, use_cache in (("cache", True), ("no_cache", False)):
        outputs[name] = beam_search(decoder, memory, batch_size, use_cache=use_cache, **settings)
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            beam_search(decoder, memory, batch_size, use_cache=use_cache, **settings)
            runs.append(time.perf_counter() - start)
        seconds[name] = statistics.median(runs)
    result = {
        "command": "python benchmarks/caption_decoding.py " + " ".join(argv or []),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "settings": vars(args),
        "median_seconds": seconds,
        "captions_per_s": {k: batch_size / s for k, s in seconds.items()},
        "speedup_cache": seconds["no_cache"] / seconds["cache"],
        "same_captions": bool(
            torch.equal(outputs["cache"].sequences, outputs["no_cache"].sequences)
        ),
        "mean_length": float(outputs["cache"].lengths.float().mean()),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
