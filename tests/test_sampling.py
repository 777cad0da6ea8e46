"""No decode path ever chooses an id past the tokenizer's (``lmkit.infer.sampling.within_vocabulary``).

An imported model's embedding may hold padding rows beyond its tokens (T5: 32,128 rows for 32,100 tokens).
The models here are made so that a padding row wins every argmax (the final norm keeps one dimension, on
which two padding rows of the output projection are ±50 and every real row is small): greedy and sampled,
cached and not, decoder and encoder-decoder, ids in and text in, and ``lmkit generate``, every token is a
real one, the best of the real tokens (what transformers' logits cut to the tokenizer would choose).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.infer.generate import generate_ids, generate_seq2seq_ids
from lmkit.infer.sampling import (
    GenerationConfig,
    _draw,
    _multinomial_draws_by_exponentials,
    apply_temperature,
    choose_next,
    process_logits,
    within_vocabulary,
)
from lmkit.infer.text import generate
from lmkit.models import build_model
from lmkit.models.checkpoint import save_checkpoint
from lmkit.tokenizer import Tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

PADDING = 8  # embedding rows past the tokenizer's


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(["the cat sees the bird. a dog likes a red ball."] * 40, vocab_size=400, show_progress=False)


def padded_model(family: str, vocab: int) -> torch.nn.Module:
    """A model of ``vocab + PADDING`` rows whose padding rows win every argmax over the whole embedding."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        family=family,  # type: ignore[arg-type]
        vocab_size=vocab + PADDING,
        d_model=32,
        n_layers=1,
        n_heads=4,
        max_seq_len=32,
        max_target_len=16,
        tie_embeddings=False,
    )
    model = build_model(cfg).eval()
    norm = model.norm if family == "decoder" else model.decoder.norm
    with torch.no_grad():
        norm.weight.zero_()
        norm.weight[0] = 1.0  # the final states keep dimension 0 alone: logits = y0 · W[:, 0]
        w = model.lm_head.weight  # (rows, C)
        w.uniform_(-0.5, 0.5)
        w[vocab:] = 0.0
        w[vocab, 0], w[vocab + 1, 0] = 50.0, -50.0  # whatever the sign of y0, a padding row is 50·|y0|
    return model


def test_within_vocabulary_cuts_the_padding_rows_and_leaves_the_rest() -> None:
    logits = torch.arange(12.0).view(2, 6)
    assert torch.equal(within_vocabulary(logits, 4), logits[:, :4])
    assert within_vocabulary(logits, None) is logits and within_vocabulary(logits, 6) is logits
    assert within_vocabulary(logits[0], 5).shape == (5,)


@pytest.mark.parametrize("family", ["decoder", "encdec"])
def test_no_decode_path_chooses_a_padding_row(tok: Tokenizer, family: str) -> None:
    V = tok.vocab_size
    model = padded_model(family, V)
    prompt = torch.tensor([tok.encode("the cat sees the bird")[:5], tok.encode("a dog likes a red ball")[:5]])
    greedy = GenerationConfig(max_new_tokens=6, stop_at_eos=False)
    sampled = GenerationConfig(max_new_tokens=6, do_sample=True, seed=3, top_k=50, stop_at_eos=False)
    if family == "decoder":
        with torch.no_grad():
            raw = model(prompt)[:, -1]  # (B, rows): without the rule, a padding row would be chosen
        runs: dict[object, torch.Tensor] = {
            c: generate_ids(model, prompt, greedy, cache=c, vocab=V)[:, 5:] for c in (True, False)
        }
        runs["sampled"] = generate_ids(model, prompt, sampled, vocab=V)[:, 5:]
        unguarded = generate_ids(model, prompt, greedy)[:, 5:]
    else:
        with torch.no_grad():
            start = torch.full((2, 1), tok.decoder_start_id)
            raw = model(prompt, start)[:, -1]
        runs = {
            c: generate_seq2seq_ids(model, prompt, greedy, tok.decoder_start_id, cache=c, vocab=V)
            for c in (True, False)
        }
        runs["sampled"] = generate_seq2seq_ids(model, prompt, sampled, tok.decoder_start_id, vocab=V)
        unguarded = generate_seq2seq_ids(model, prompt, greedy, tok.decoder_start_id)
    assert (raw.argmax(-1) >= V).all() and (unguarded >= V).all()  # the model really prefers its padding
    for name, ids in runs.items():
        assert ids.shape == (2, 6) and int(ids.max()) < V, name
    assert torch.equal(runs[True], runs[False])
    assert runs[True][:, 0].tolist() == raw[:, :V].argmax(-1).tolist()  # the best real token
    # text in, text out (the path `lmkit generate` takes), greedy and explained
    res = generate(model, tok, "the cat sees", GenerationConfig(max_new_tokens=5, stop_at_eos=False), explain=True)
    assert len(res.token_ids) == 5 and max(res.token_ids) < V
    assert all(c.token_id < V for s in res.steps for c in s.candidates)


def test_lmkit_generate_on_a_padded_encoder_decoder(
    tok: Tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = padded_model("encdec", tok.vocab_size)
    save_checkpoint(tmp_path / "ckpt", model, model.cfg, tokenizer=tok)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "ckpt"), "the cat sees", "--max-new-tokens", "5", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got["tokens"]) >= 1 and max(got["tokens"]) < tok.vocab_size


# --------------------------------------------------------------------------- the lean sampling step


def _by_definition(rows: torch.Tensor, g: GenerationConfig, seed: int) -> torch.Tensor:
    """The token the straightforward definition draws: softmax over process_logits' filtered
    full-vocabulary logits; the candidates (the top k with top-k, every id with top-p alone, ranked by
    scaled logit; every id in vocabulary order otherwise) drawn from by torch.multinomial."""
    probs = process_logits(rows, g).softmax(dim=-1)  # (B, V)
    V = rows.shape[-1]
    if g.top_k is None and g.top_p is None:
        order = torch.arange(V).expand_as(rows)
    else:
        n = g.top_k if g.top_k is not None and g.top_k < V else V
        order = apply_temperature(rows, g.temperature).sort(dim=-1, descending=True).indices[:, :n]
    pick = torch.multinomial(probs.gather(-1, order), 1, generator=torch.Generator().manual_seed(seed))
    return order.gather(-1, pick).squeeze(-1)


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 0.8, "top_k": 50},
        {"temperature": 1.0, "top_k": 7},
        {"temperature": 1.3, "top_p": 0.9},
        {"temperature": 0.8, "top_k": 50, "top_p": 0.95},
        {"temperature": 2.0, "top_k": 12, "top_p": 0.5},
        {"temperature": 0.7},
    ],
)
@pytest.mark.parametrize("batch", [1, 4])
def test_lean_sampling_picks_the_token_of_the_definition(settings: dict, batch: int) -> None:
    g = GenerationConfig(do_sample=True, **settings)
    rows = torch.randn(batch, 3000, generator=torch.Generator().manual_seed(batch)) * 3  # distinct logits
    picks = []
    for seed in range(60):
        got, _ = choose_next(rows, g, torch.Generator().manual_seed(seed))
        assert torch.equal(got, _by_definition(rows, g, seed)), (settings, seed)
        picks.append(got)
    assert len({tuple(p.tolist()) for p in picks}) > 2  # the seeds really draw different tokens


def test_the_draw_is_torch_multinomial() -> None:
    """The sampling step draws as torch.multinomial(probs, 1) does, seed for seed (it skips only its checks)."""
    assert _multinomial_draws_by_exponentials()
    for seed in range(50):
        probs = torch.rand(3, 1 + seed * 7, generator=torch.Generator().manual_seed(seed)).softmax(dim=-1)
        if probs.shape[-1] > 3:
            probs[:, ::3] = 0.0  # as the tokens a filter cut: never drawn
        want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(_draw(probs, torch.Generator().manual_seed(seed)), want)
