"""Decoding: cache against no cache, causality, beam search against brute force."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlparse.models.generation import beam_search, greedy_search, sample

PAD, BOS, EOS = 0, 1, 2


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.query, self.proj_x = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.image_kv = nn.Linear(dim, 2 * dim)  # image tokens -> keys and values
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def split(self, x: Tensor) -> Tensor:  # (N, T, D) -> (N, H, T, D / H)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x, past, image, causal):
        """x (N, T, D); past/image: (keys, values) (N, H, *, D / H). Returns x, new past."""
        q, k, v = (self.split(t) for t in self.qkv(self.ln1(x)).chunk(3, dim=-1))
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.proj(a.transpose(1, 2).flatten(2))
        q = self.split(self.query(self.ln2(x)))
        a = F.scaled_dot_product_attention(q, *image)
        x = x + self.proj_x(a.transpose(1, 2).flatten(2))
        return x + self.mlp(self.ln3(x)), (k, v)


class ToyDecoder(nn.Module):
    """A tiny causal transformer with cross-attention to image tokens and a real KV cache."""

    bos_token_id, eos_token_id, pad_token_id = BOS, EOS, PAD

    def __init__(self, vocab: int = 11, dim: int = 16, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, dim), nn.Embedding(64, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab)
        with torch.no_grad():
            self.head.bias[EOS] += 0.5  # captions end after a few tokens

    def encode(self, image_tokens: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Image keys/values of every layer, once per image: (B, H, M, D / H) each."""
        return [
            tuple(b.split(t) for t in b.image_kv(image_tokens).chunk(2, -1)) for b in self.blocks
        ]

    def _run(self, ids, start, past, image, causal):
        x = self.embed(ids) + self.pos(torch.arange(start, start + ids.shape[1]))
        new_past = []
        for block, p, img in zip(self.blocks, past, image, strict=True):
            x, kv = block(x, p, img, causal)
            new_past.append(kv)
        return self.head(self.norm(x)), new_past

    def _empty(self, n: int, image) -> list[tuple[Tensor, Tensor]]:
        return [(k.new_zeros(n, k.shape[1], 0, k.shape[3]),) * 2 for k, _ in image]

    def init_cache(self, memory, rows):
        image = [(k[rows], v[rows]) for k, v in memory]
        return {"rows": rows, "image": image, "self": self._empty(len(rows), image), "len": 0}

    def step(self, input_ids, cache):
        logits, past = self._run(input_ids, cache["len"], cache["self"], cache["image"], False)
        return logits[:, -1], {**cache, "self": past, "len": cache["len"] + 1}

    def reorder(self, cache, index):
        # the searches keep each row on its image, so the image keys/values stay where they are
        assert torch.equal(cache["rows"][index], cache["rows"])
        past = [(k[index], v[index]) for k, v in cache["self"]]
        return {**cache, "self": past}

    def full(self, input_ids, memory, rows):
        image = [(k[rows], v[rows]) for k, v in memory]
        return self._run(input_ids, 0, self._empty(len(rows), image), image, True)[0]


@pytest.fixture(scope="module")
def toy() -> tuple[ToyDecoder, list]:
    torch.manual_seed(0)
    decoder = ToyDecoder().eval()
    images = torch.randn(3, 5, 16)
    with torch.no_grad():
        return decoder, decoder.encode(images)


def test_cached_steps_give_the_full_pass_logits(toy):
    decoder, memory = toy
    rows = torch.tensor([0, 1, 2])
    ids = torch.randint(3, 11, (3, 7))
    with torch.no_grad():
        full = decoder.full(ids, memory, rows)
        cache = decoder.init_cache(memory, rows)
        for t in range(7):
            logits, cache = decoder.step(ids[:, t : t + 1], cache)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


def test_output_at_t_ignores_later_tokens(toy):
    decoder, memory = toy
    rows = torch.tensor([0, 1, 2])
    ids = torch.randint(3, 11, (3, 8))
    changed = ids.clone()
    changed[:, 5:] = (ids[:, 5:] - 3 + 1) % 8 + 3  # every token after t = 4 differs
    with torch.no_grad():
        a, b = decoder.full(ids, memory, rows), decoder.full(changed, memory, rows)
    assert torch.equal(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])  # the later positions do see the change


def test_greedy_with_cache_equals_without(toy):
    decoder, memory = toy
    a = greedy_search(decoder, memory, 3, max_length=12, use_cache=True)
    b = greedy_search(decoder, memory, 3, max_length=12, use_cache=False)
    assert torch.equal(a.sequences, b.sequences)
    assert torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(a.scores, b.scores)
    assert (a.lengths < 12).any()  # some captions end: EOS handling is exercised


@pytest.mark.parametrize("beams", [3, 5])
def test_beam_with_cache_equals_without(toy, beams):
    decoder, memory = toy
    a = beam_search(decoder, memory, 3, num_beams=beams, max_length=12, use_cache=True)
    b = beam_search(decoder, memory, 3, num_beams=beams, max_length=12, use_cache=False)
    assert len(set(a.lengths.tolist())) > 1 and (a.lengths > 3).all()  # not trivially short
    assert torch.equal(a.sequences, b.sequences)
    assert torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(a.scores, b.scores)


def test_beam_one_is_greedy(toy):
    decoder, memory = toy
    for use_cache in (True, False):
        g = greedy_search(decoder, memory, 3, max_length=12, use_cache=use_cache)
        b = beam_search(decoder, memory, 3, num_beams=1, max_length=12, use_cache=use_cache)
        assert torch.equal(g.sequences, b.sequences)
        torch.testing.assert_close(b.scores, g.scores / g.lengths.float())  # alpha = 1


def test_beam_search_is_batched_over_images(toy):
    decoder, memory = toy
    batched = beam_search(decoder, memory, 3, num_beams=4, max_length=12)
    for i in range(3):
        one = beam_search(
            decoder,
            [(k[i : i + 1], v[i : i + 1]) for k, v in memory],
            1,
            num_beams=4,
            max_length=12,
        )
        n = int(one.lengths[0])
        assert torch.equal(one.sequences[0, :n], batched.sequences[i, :n])


def test_sampling_with_cache_equals_without(toy):
    decoder, memory = toy
    outs = []
    for use_cache in (True, False):
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            outs.append(
                sample(
                    decoder,
                    memory,
                    3,
                    num_samples=4,
                    temperature=0.8,
                    top_k=5,
                    max_length=12,
                    use_cache=use_cache,
                    generator=gen,
                )
            )
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    torch.testing.assert_close(outs[0].token_logprobs, outs[1].token_logprobs)


def test_padding_after_the_end_token(toy):
    decoder, memory = toy
    out = greedy_search(decoder, memory, 3, max_length=12)
    for seq, n in zip(out.sequences, out.lengths, strict=True):
        ended = bool((seq == EOS).any())
        if ended:
            assert seq[n - 1] == EOS and not (seq[: n - 1] == EOS).any()
        assert (seq[n:] == PAD).all()
    assert torch.equal(out.token_mask().sum(1), out.lengths)
    assert (out.token_logprobs[~out.token_mask()] == 0).all()


# A hand-made model: next-token probabilities given the prefix (after the start token).
A, B, C, D = 3, 4, 5, 6
TABLE = {
    (): {A: 0.55, B: 0.45},
    (A,): {C: 0.36, D: 0.34, EOS: 0.30},
    (A, C): {EOS: 1.0},
    (A, D): {EOS: 1.0},
    (B,): {EOS: 0.52, C: 0.48},
    (B, C): {D: 0.9, EOS: 0.1},
    (B, C, D): {EOS: 1.0},
}


class TableDecoder:
    """Logits = log of a table's probabilities (unlisted prefixes end); the cache is the prefix."""

    bos_token_id, eos_token_id, pad_token_id = BOS, EOS, PAD
    vocab = 10

    def __init__(self, table: dict = TABLE) -> None:
        self.table = table

    def _logits(self, prefix: tuple[int, ...]) -> Tensor:
        probs = self.table.get(tuple(t for t in prefix if t not in (BOS, PAD)), {EOS: 1.0})
        out = torch.full((self.vocab,), -1e9)
        for token, p in probs.items():
            out[token] = math.log(p)
        return out

    def init_cache(self, memory, rows):
        return torch.zeros(len(rows), 0, dtype=torch.long)

    def step(self, input_ids, cache):
        cache = torch.cat([cache, input_ids], dim=1)
        return torch.stack([self._logits(tuple(r.tolist())) for r in cache]), cache

    def reorder(self, cache, index):
        return cache[index]

    def full(self, input_ids, memory, rows):
        seqs = input_ids.tolist()
        return torch.stack(
            [torch.stack([self._logits(tuple(s[: t + 1])) for t in range(len(s))]) for s in seqs]
        )


def _all_captions(table=TABLE, prefix=(), logp=0.0):
    """Every caption the table can produce, with its summed log-probability."""
    for token, p in table.get(prefix, {EOS: 1.0}).items():
        if token == EOS:
            yield (*prefix, EOS), logp + math.log(p)
        else:
            yield from _all_captions(table, (*prefix, token), logp + math.log(p))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_finds_the_best_caption_where_greedy_fails(alpha):
    captions = list(_all_captions())
    best, best_logp = max(captions, key=lambda c: c[1] / len(c[0]) ** alpha)
    greedy = greedy_search(TableDecoder(), None, 1, max_length=10)
    beam = beam_search(TableDecoder(), None, 1, num_beams=2, length_alpha=alpha, max_length=10)
    n = int(beam.lengths[0])
    assert tuple(beam.sequences[0, :n].tolist()) == best
    assert tuple(greedy.sequences[0, : int(greedy.lengths[0])].tolist()) == (A, C, EOS) != best
    assert beam.scores[0].item() == pytest.approx(best_logp / len(best) ** alpha, rel=1e-6)
    # length normalisation matters here: the two alphas prefer different captions
    assert best == ((B, EOS) if alpha == 0 else (B, C, D, EOS))


def test_sampling_follows_the_model_distribution():
    gen = torch.Generator().manual_seed(0)
    out = sample(TableDecoder(), None, 1, num_samples=4000, max_length=6, generator=gen)
    first = out.sequences[:, 0]
    assert abs((first == A).float().mean().item() - 0.55) < 0.03
    for seq, lp, n in zip(
        out.sequences[:50], out.token_logprobs[:50], out.lengths[:50], strict=True
    ):
        prefix, expected = (), []
        for token in seq[:n].tolist():
            expected.append(math.log(TABLE.get(prefix, {EOS: 1.0})[token]))
            prefix = (*prefix, token)
        torch.testing.assert_close(lp[:n], torch.tensor(expected))


def test_top_k_restricts_the_draw():
    gen = torch.Generator().manual_seed(1)
    out = sample(TableDecoder(), None, 1, num_samples=500, top_k=2, max_length=6, generator=gen)
    after_a = out.sequences[out.sequences[:, 0] == A, 1]
    assert set(after_a.tolist()) == {C, D}  # EOS (p = 0.30) is the third most likely
    one = sample(TableDecoder(), None, 1, num_samples=3, top_k=1, max_length=6, generator=gen)
    greedy = greedy_search(TableDecoder(), None, 1, max_length=6)
    assert all(torch.equal(s, greedy.sequences[0]) for s in one.sequences)


# A finished caption enters the beam, is pushed out by two better running prefixes, and those
# then fall below it: the search must still return it.
E, F_, G = 7, 8, 9
PUSHED_OUT = {
    (): {A: 0.5, B: 0.5},
    (A,): {EOS: 0.34, C: 0.33, D: 0.33},
    (B,): {C: 1.0},
    (B, C): {C: 0.5, D: 0.5},
    (B, C, C): {EOS: 0.1, E: 0.3, F_: 0.3, G: 0.3},
    (B, C, D): {EOS: 0.1, E: 0.3, F_: 0.3, G: 0.3},
}


def test_beam_keeps_a_finished_caption_that_was_pushed_out():
    best, best_logp = max(_all_captions(PUSHED_OUT), key=lambda c: c[1])
    assert best == (A, EOS)
    out = beam_search(
        TableDecoder(PUSHED_OUT), None, 1, num_beams=2, length_alpha=0.0, max_length=10
    )
    assert tuple(out.sequences[0, : int(out.lengths[0])].tolist()) == best
    assert out.scores[0].item() == pytest.approx(best_logp, rel=1e-6)
