"""Generation: the KV cache changes speed, never tokens; the sampling settings do what they promise."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.infer.generate import generate_ids, generate_seq2seq_ids
from lmkit.infer.packed import PackedDecoder, packed_decoder
from lmkit.infer.sampling import (
    GenerationConfig,
    choose_next,
    format_step,
    make_generator,
    process_logits,
    top_k_filter,
    top_p_filter,
)
from lmkit.infer.text import generate
from lmkit.models import build_model
from lmkit.models.checkpoint import save_checkpoint
from lmkit.models.decoder import Decoder
from lmkit.tokenizer import Tokenizer, train_tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine every parallel
    region (e.g. CPU attention over heads) can wait for a descheduled thread: 1 thread keeps these
    tests in seconds. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_decoder(vocab: int = 96, seed: int = 0, max_seq_len: int = 48, **kw: object) -> Decoder:
    """A random decoder whose logits are spread out (std 0.02 init gives near-ties everywhere)."""
    cfg = ModelConfig(
        family="decoder", vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, max_seq_len=max_seq_len, **kw
    )  # type: ignore[arg-type]
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.35 if "emb" in name or "lm_head" in name else 0.15)
    return model.eval()


def sentences(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    subj = ["the cat", "a dog", "the old man", "my sister", "the farmer", "a bird"]
    verb = ["sees", "likes", "finds", "feeds", "calls", "follows"]
    obj = ["the bird", "a red ball", "the river", "his friend", "the small house", "some bread"]
    return [" ".join(f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)}." for _ in range(4)) for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(sentences(), vocab_size=400, show_progress=False)


@pytest.fixture(scope="module")
def lm(tok: Tokenizer) -> Decoder:
    return tiny_decoder(vocab=tok.vocab_size, seed=1)


# --------------------------------------------------------------------------- cache == no cache


@pytest.mark.parametrize(
    "kw", [{}, {"pos_encoding": "learned"}, {"pos_encoding": "sinusoidal"}, {"tie_embeddings": False}]
)
@pytest.mark.parametrize("batch", [1, 3])
def test_kv_cache_generation_equals_recomputing_everything(kw: dict, batch: int) -> None:
    model = tiny_decoder(**kw)
    ids = torch.randint(5, model.cfg.vocab_size, (batch, 7), generator=torch.Generator().manual_seed(3))
    greedy = GenerationConfig(max_new_tokens=30, stop_at_eos=False)
    fast = generate_ids(model, ids, greedy, cache=True)
    slow = generate_ids(model, ids, greedy, cache=False)
    assert fast.shape == (batch, 37)
    assert torch.equal(fast, slow)
    sampled = GenerationConfig(
        max_new_tokens=30, do_sample=True, temperature=1.3, top_k=40, top_p=0.95, seed=7, stop_at_eos=False
    )
    assert torch.equal(generate_ids(model, ids, sampled, cache=True), generate_ids(model, ids, sampled, cache=False))


def test_packed_logits_match_the_model_forward_pass() -> None:
    model = tiny_decoder()
    ids = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(0))
    packed = packed_decoder(model)
    assert packed is not None
    with torch.inference_mode():
        full = model(ids)  # (2, 11, V)
        session = packed.start(2, 11)
        other = packed.start(2, 11)  # a second session on the same weights does not disturb the first
        first = session.forward(ids[:, :6])  # prefill 6
        other.forward(ids[:, 3:5])
        steps = [session.forward(ids[:, t : t + 1]) for t in range(6, 11)]
        with pytest.raises(ValueError):
            session.forward(ids[:, :1])  # the cache is full
    torch.testing.assert_close(first, full[:, 5], rtol=1e-4, atol=1e-4)
    for t, logits in zip(range(6, 11), steps):
        torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # several new tokens after a prefix: the causal mask over the cache
        session = packed.start(2, 11)
        session.forward(ids[:, :4])
        torch.testing.assert_close(session.forward(ids[:, 4:9]), full[:, 8], rtol=1e-4, atol=1e-4)


def test_packed_weights_follow_parameter_updates() -> None:
    model = tiny_decoder()
    first = packed_decoder(model)
    assert packed_decoder(model) is first  # built once
    with torch.no_grad():
        model.blocks[0].mlp.up_proj.weight.mul_(2.0)  # e.g. an optimizer step
    assert packed_decoder(model) is not first


def test_concurrent_generations_on_one_model_do_not_interfere() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = tiny_decoder()
    g = GenerationConfig(max_new_tokens=25, stop_at_eos=False)
    prompts = [torch.tensor([[5 + i, 9, 13 + 2 * i]]) for i in range(6)]
    alone = [generate_ids(model, p, g) for p in prompts]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda p: generate_ids(model, p, g), prompts))
    assert all(torch.equal(a, b) for a, b in zip(alone, together))


def test_unrecognised_decoder_uses_the_models_own_cache_path() -> None:
    class Custom(Decoder):  # not exactly lmkit's Decoder: no packing
        pass

    ref = tiny_decoder()
    model = Custom(ref.cfg).eval()
    model.load_state_dict(ref.state_dict())
    assert packed_decoder(model) is None
    ids = torch.tensor([[5, 9, 13]])
    g = GenerationConfig(max_new_tokens=20, stop_at_eos=False)
    out = generate_ids(model, ids, g, cache=True)
    assert torch.equal(out, generate_ids(model, ids, g, cache=False))
    assert torch.equal(out, generate_ids(ref, ids, g, cache=True))


def test_quantized_and_half_precision_models_generate_through_their_own_forward() -> None:
    from lmkit.models.int8 import quantize_int8

    model = tiny_decoder()
    ids = torch.tensor([[5, 9, 13, 2]])
    g = GenerationConfig(max_new_tokens=15, stop_at_eos=False)
    quantize_int8(model)
    assert packed_decoder(model) is None
    assert torch.equal(generate_ids(model, ids, g, cache=True), generate_ids(model, ids, g, cache=False))
    half = tiny_decoder().to(torch.bfloat16)
    assert packed_decoder(half) is None
    assert generate_ids(half, ids, g).shape == (1, 19)


# --------------------------------------------------------------------------- the sampling step


def test_greedy_equals_sampling_as_temperature_goes_to_zero() -> None:
    model = tiny_decoder()
    ids = torch.tensor([[3, 17, 40, 8]])
    greedy = generate_ids(model, ids, GenerationConfig(max_new_tokens=25, stop_at_eos=False))
    for seed in range(3):
        cold = GenerationConfig(max_new_tokens=25, do_sample=True, temperature=1e-6, seed=seed, stop_at_eos=False)
        assert torch.equal(generate_ids(model, ids, cold), greedy)
    zero = GenerationConfig(max_new_tokens=25, do_sample=True, temperature=0.0, seed=0, stop_at_eos=False)
    assert torch.equal(generate_ids(model, ids, zero), greedy)


def test_top_k_never_picks_outside_the_k_best() -> None:
    logits = torch.randn(200, generator=torch.Generator().manual_seed(0)) * 2
    best = set(torch.topk(logits, 5).indices.tolist())
    filtered = top_k_filter(logits, 5)
    assert torch.isfinite(filtered).sum() == 5
    g = GenerationConfig(do_sample=True, temperature=3.0, top_k=5)  # hot: without top-k others would appear
    gen, _ = make_generator(0)
    picks = {int(choose_next(logits, g, gen)[0]) for _ in range(2000)}
    assert picks <= best
    assert len(picks) == 5  # and all five do get drawn
    unfiltered = {
        int(choose_next(logits, GenerationConfig(do_sample=True, temperature=3.0), gen)[0]) for _ in range(500)
    }
    assert not unfiltered <= best


def test_top_p_never_picks_outside_the_nucleus() -> None:
    logits = torch.randn(300, generator=torch.Generator().manual_seed(1)) * 3
    p = 0.8
    probs = logits.softmax(-1)
    order = probs.argsort(descending=True)
    cum = probs[order].cumsum(0)
    size = int((cum < p).sum()) + 1  # smallest prefix reaching p
    nucleus = set(order[:size].tolist())
    assert cum[size - 1] >= p and (size == 1 or cum[size - 2] < p)
    kept = torch.isfinite(top_p_filter(logits, p))
    assert set(kept.nonzero().flatten().tolist()) == nucleus
    g = GenerationConfig(do_sample=True, top_p=p)
    gen, _ = make_generator(0)
    picks = {int(choose_next(logits, g, gen)[0]) for _ in range(3000)}
    assert picks <= nucleus
    assert len(picks) > 1
    # a tiny p keeps only the top token
    assert torch.isfinite(top_p_filter(logits, 1e-9)).sum() == 1


def test_sampling_draws_from_the_processed_distribution() -> None:
    logits = torch.tensor([[3.0, 2.5, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0]])
    gen, _ = make_generator(5)
    for g in (
        GenerationConfig(do_sample=True, temperature=0.7),
        GenerationConfig(do_sample=True, temperature=1.5, top_k=4),
        GenerationConfig(do_sample=True, top_p=0.7),
        GenerationConfig(do_sample=True, temperature=2.0, top_k=6, top_p=0.8),
    ):
        want = process_logits(logits, g).softmax(-1)[0]
        draws = torch.stack([choose_next(logits.expand(500, -1), g, gen)[0] for _ in range(40)]).flatten()
        freq = torch.bincount(draws, minlength=8).float() / draws.numel()
        assert (freq - want).abs().max() < 0.015, (g, freq, want)
        assert (freq[want == 0] == 0).all()


def test_explanation_shows_probabilities_before_and_after() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    g = GenerationConfig(do_sample=True, temperature=0.5, top_k=2)
    token, expl = choose_next(logits, g, make_generator(0)[0], explain=True)
    (e,) = expl  # type: ignore[misc]
    assert e.chosen == int(token) and e.chosen in (0, 1) and e.kept == 2
    before = logits.softmax(-1)
    after = (logits[:2] / 0.5).softmax(-1)
    assert [c.token_id for c in e.candidates] == [0, 1, 2, 3, 4]
    for c in e.candidates:
        assert c.p_before == pytest.approx(float(before[c.token_id]), rel=1e-5)
        assert c.p_after == pytest.approx(float(after[c.token_id]) if c.token_id < 2 else 0.0, rel=1e-5)
    # greedy: all of the probability after goes to the most likely token
    _, (eg,) = choose_next(logits, GenerationConfig(), None, explain=True)  # type: ignore[misc]
    assert eg.chosen == 0 and eg.candidates[0].p_after == 1.0 and eg.kept == 1
    table = format_step(e)
    assert "before" in table and "after" in table and "◀ chosen" in table and "cut" in table


def test_same_seed_same_text_different_seeds_differ(lm: Decoder, tok: Tokenizer) -> None:
    def run(seed: int) -> str:
        g = GenerationConfig(max_new_tokens=20, do_sample=True, temperature=1.5, seed=seed, stop_at_eos=False)
        return generate(lm, tok, "the cat", g).completion

    assert run(1) == run(1)
    assert len({run(s) for s in range(2, 6)}) > 1


# --------------------------------------------------------------------------- stopping and prompts


def eos_model(vocab: int, eos: int) -> Decoder:
    """A real decoder whose next token is always ``eos``: residual dimension 0 is large and positive
    for every token and no block writes to it; the output head reads only that dimension."""
    model = tiny_decoder(vocab=vocab, tie_embeddings=False)
    with torch.no_grad():
        model.tok_emb.weight[:, 0] = 50.0
        for block in model.blocks:
            block.attn.o_proj.weight[0] = 0.0
            block.mlp.down_proj.weight[0] = 0.0
        model.norm.weight.zero_()
        model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[eos, 0] = 1.0
    return model


def test_stops_at_end_of_sequence(tok: Tokenizer) -> None:
    model = eos_model(tok.vocab_size, tok.eos_id)
    res = generate(model, tok, "the cat sees", GenerationConfig(max_new_tokens=10))
    assert res.stop_reason == "eos"
    assert res.token_ids == [tok.eos_id]
    assert res.completion == "" and res.text == "the cat sees"
    res = generate(model, tok, "the cat sees", GenerationConfig(max_new_tokens=10, stop_at_eos=False))
    assert res.stop_reason == "max_new_tokens" and res.token_ids == [tok.eos_id] * 10
    # batched ids: every row is done at its first EOS
    out = generate_ids(model, torch.tensor([[5, 6], [7, 8]]), GenerationConfig(max_new_tokens=10), eos_id=tok.eos_id)
    assert out.tolist() == [[5, 6, tok.eos_id], [7, 8, tok.eos_id]]


def test_rows_that_finish_early_are_padded_with_eos() -> None:
    model = tiny_decoder()
    ids = torch.tensor([[5, 9, 13], [20, 21, 22]])
    ref = generate_ids(model, ids, GenerationConfig(max_new_tokens=12, stop_at_eos=False))
    eos = int(ref[0, 5])  # row 0's third new token plays the end-of-sequence token
    out = generate_ids(model, ids, GenerationConfig(max_new_tokens=12), eos_id=eos)
    row1_hits = (ref[1, 3:] == eos).nonzero()
    if len(row1_hits) and int(row1_hits[0]) <= 2:
        pytest.skip("row 1 reaches the chosen token first")
    first0 = int((ref[0, 3:] == eos).nonzero()[0])
    assert torch.equal(out[0, 3 : 3 + first0 + 1], ref[0, 3 : 3 + first0 + 1])
    assert (out[0, 3 + first0 :] == eos).all()
    n1 = int(row1_hits[0]) + 1 if len(row1_hits) else 12
    assert torch.equal(out[1, 3 : 3 + n1], ref[1, 3 : 3 + n1])


def test_prompt_longer_than_the_window(lm: Decoder, tok: Tokenizer) -> None:
    window = lm.cfg.max_seq_len
    prompt = " ".join(sentences(5, seed=3))
    ids = tok.encode(prompt)
    assert len(ids) > window
    with pytest.raises(LmkitError, match=rf"prompt is {len(ids)} tokens but the context window is {window} tokens"):
        generate(lm, tok, prompt, GenerationConfig(max_new_tokens=5))
    res = generate(lm, tok, prompt, GenerationConfig(max_new_tokens=5, truncate="left", stop_at_eos=False))
    assert res.prompt_ids == ids[-(window - 5) :]
    assert res.truncated_tokens == len(ids) - (window - 5)
    assert len(res.token_ids) == 5 and res.stop_reason == "max_new_tokens"
    assert res.text == prompt + res.completion


def test_generation_stops_when_the_window_is_full(lm: Decoder, tok: Tokenizer) -> None:
    window = lm.cfg.max_seq_len
    ids = tok.encode(" ".join(sentences(5, seed=3)))[: window - 4]
    prompt = tok.decode(ids)
    assert tok.encode(prompt) == ids
    res = generate(lm, tok, prompt, GenerationConfig(max_new_tokens=50, stop_at_eos=False))
    assert res.stop_reason == "context window"
    assert len(res.prompt_ids) + len(res.token_ids) == window


def test_empty_prompt_starts_from_bos(lm: Decoder, tok: Tokenizer) -> None:
    res = generate(lm, tok, "", GenerationConfig(max_new_tokens=4, stop_at_eos=False))
    assert res.prompt_ids == [tok.bos_id] and len(res.token_ids) == 4
    assert res.text == res.completion == tok.decode(res.token_ids)


def test_bad_settings_and_encoders_are_refused(lm: Decoder, tok: Tokenizer) -> None:
    for bad in (
        GenerationConfig(max_new_tokens=0),
        GenerationConfig(temperature=-1.0),
        GenerationConfig(top_k=0),
        GenerationConfig(top_p=1.5),
        GenerationConfig(truncate="right"),
    ):  # type: ignore[arg-type]
        with pytest.raises(LmkitError):
            generate(lm, tok, "the cat", bad)
    encoder = build_model(
        ModelConfig(family="encoder", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=32)
    )
    with pytest.raises(LmkitError, match="encoder models do not generate text; use `lmkit fill-mask`"):
        generate(encoder, tok, "the cat", GenerationConfig())


def test_encoder_decoder_cache_equals_no_cache() -> None:
    cfg = ModelConfig(
        family="encdec", vocab_size=80, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, max_target_len=16
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ids = torch.randint(5, 80, (2, 9), generator=torch.Generator().manual_seed(2))
    for g in (
        GenerationConfig(max_new_tokens=12, stop_at_eos=False),
        GenerationConfig(max_new_tokens=12, do_sample=True, seed=3, stop_at_eos=False),
    ):
        fast = generate_seq2seq_ids(model, ids, g, start_id=0, cache=True)
        slow = generate_seq2seq_ids(model, ids, g, start_id=0, cache=False)
        assert fast.shape == (2, 12) and torch.equal(fast, slow)


def test_encoder_decoder_generates_from_text(tok: Tokenizer) -> None:
    cfg = ModelConfig(
        family="encdec", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=24, max_target_len=8
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    res = generate(model, tok, "the cat <extra_id_0> the river.", GenerationConfig(max_new_tokens=6, stop_at_eos=False))
    # the encoder read the prompt (sentinel as one token) and EOS; the decoder started from <pad>
    assert res.prompt_ids[-1] == tok.eos_id and tok.sentinel_ids[0] in res.prompt_ids
    want = generate_seq2seq_ids(
        model,
        torch.tensor([res.prompt_ids]),
        GenerationConfig(max_new_tokens=6, stop_at_eos=False),
        start_id=tok.pad_id,
    )
    assert res.token_ids == want[0].tolist() and res.stop_reason == "max_new_tokens"
    with pytest.raises(LmkitError, match="encoder's context window is 24 tokens"):
        generate(model, tok, " ".join(sentences(3)), GenerationConfig())
    assert len(generate(model, tok, " ".join(sentences(3)), GenerationConfig(truncate="left")).prompt_ids) == 24


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, lm: Decoder, tok: Tokenizer) -> Path:
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "ckpt-00000010", lm, lm.cfg, tokenizer=tok, meta={"step": 10})
    return run


def test_cli_generate_json(ckpt: Path, lm: Decoder, tok: Tokenizer, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["generate", str(ckpt), "the cat", "--max-new-tokens", "6", "--no-stop-at-eos", "--json", "--device", "cpu"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"] == "the cat" and out["text"] == "the cat" + out["completion"]
    assert len(out["tokens"]) == 6 and out["stop_reason"] == "max_new_tokens"
    assert out["tokens_per_s"] > 0 and out["settings"]["do_sample"] is False
    expected = generate_ids(
        lm, torch.tensor([tok.encode("the cat")]), GenerationConfig(max_new_tokens=6, stop_at_eos=False)
    )
    assert out["tokens"] == expected[0, -6:].tolist()


def test_cli_generate_sampling_is_reproducible(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "generate",
        str(ckpt),
        "a dog",
        "--sample",
        "--temperature",
        "1.2",
        "--top-k",
        "50",
        "--top-p",
        "0.95",
        "--seed",
        "11",
        "--max-new-tokens",
        "12",
        "--json",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["tokens"] == second["tokens"] and first["settings"]["seed"] == 11


@pytest.mark.parametrize(
    "flags, error",
    [
        (
            ["--sample", "--seed", "18446744073709551616"],
            "--seed must be an integer from 0 to 2**64-1 (18446744073709551615), got 18446744073709551616",
        ),
        (["--sample", "--seed", "-1"], "--seed must be an integer from 0 to 2**64-1 (18446744073709551615), got -1"),
        (
            ["--sample", "--seed", "1" + "0" * 100],
            "--seed must be an integer from 0 to 2**64-1 (18446744073709551615), got an integer of 333 bits",
        ),
        (["--sample", "--temperature", "nan"], "--temperature must be a finite number ≥ 0 (0 = greedy), got nan"),
        (["--sample", "--top-k", "0"], "--top-k must be at least 1, got 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be a positive integer, got 0"),
    ],
)
def test_cli_generate_bad_settings_are_one_line(
    ckpt: Path, capsys: pytest.CaptureFixture[str], flags: list[str], error: str
) -> None:
    assert main(["generate", str(ckpt), "the cat", *flags]) == 2
    assert capsys.readouterr().err == f"lmkit: error: {error}\n"


@pytest.mark.parametrize(
    "flags",
    [
        ["--temperature", "1e-300"],
        ["--temperature", "5e-324", "--top-k", "5"],
        ["--temperature", "1e-40", "--top-p", "0.5"],
        ["--seed", "18446744073709551615"],
    ],
)
def test_cli_generate_extreme_but_valid_settings(
    ckpt: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    """A tiny temperature samples from its limit, the most likely token: the greedy text."""
    base = ["generate", str(ckpt), "the cat", "--max-new-tokens", "8", "--no-stop-at-eos", "--json"]
    assert main(base) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert main([*base, "--sample", "--seed", "3", *flags]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) == 8
    if "--temperature" in flags:
        assert out["tokens"] == greedy["tokens"]


def test_tiny_temperatures_are_their_limit() -> None:
    logits = torch.tensor([[2.0, 5.0, 5.0, -1.0], [0.0, 1.0, 1.0 - 1e-6, 3.0]])
    for t in (1e-6, 1e-40, 1e-300, 5e-324):
        probs = process_logits(logits, GenerationConfig(do_sample=True, temperature=t)).softmax(-1)
        assert torch.isfinite(probs).all()
        assert torch.equal(probs, torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]]))  # exact ties share
    hot = process_logits(logits, GenerationConfig(do_sample=True, temperature=2.0)).softmax(-1)
    assert torch.allclose(hot, (logits / 2).softmax(-1))  # ordinary temperatures: unchanged


def test_cli_generate_text_and_explain(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(ckpt), "the farmer", "--max-new-tokens", "3", "--explain", "--no-stop-at-eos"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("◀ chosen") == 3
    assert "step 1: chose" in captured.out and "before" in captured.out
    assert captured.out.rstrip().splitlines()[-1].startswith("the farmer")
    assert "stopped by max_new_tokens" in captured.err


def test_cli_generate_errors(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_prompt = " ".join(sentences(5, seed=4))
    assert main(["generate", str(ckpt), long_prompt]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmkit: error: prompt is ") and "context window is 48 tokens" in err
    assert main(["generate", str(ckpt), long_prompt, "--truncate", "left", "--max-new-tokens", "4", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["truncated_prompt_tokens"] > 0 and "truncated" in captured.err
    assert main(["generate", str(tmp_path / "nope"), "x"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["generate", str(ckpt), "x", "--top-p", "0"]) == 2
    assert "top-p must be in (0, 1]" in capsys.readouterr().err
    enc_cfg = ModelConfig(family="encoder", vocab_size=400, d_model=32, n_layers=1, n_heads=4, max_seq_len=32)
    save_checkpoint(tmp_path / "enc", build_model(enc_cfg), enc_cfg, meta={})
    assert main(["generate", str(tmp_path / "enc"), "x"]) == 2
    assert "encoder models do not generate text; use `lmkit fill-mask`" in capsys.readouterr().err


def test_the_product_kernel_follows_rows_threads_and_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmkit.infer import rowkernel
    from lmkit.infer.products import product_form, product_forms
    from lmkit.plan.measure import last_level_cache_bytes

    # with the compiled kernel: panels for every row and thread count
    monkeypatch.setattr(rowkernel, "available", lambda: True)
    assert product_form(8, 10, threads=1) == product_form(1, 10**6, threads=2) == product_form(1, 10, threads=1)
    assert product_form(1, 10, threads=1) == "panels"
    # without it: oneDNN's blocked products for several rows, or one row on several threads with
    # weights past the cache; MKL for one row otherwise
    monkeypatch.setattr(rowkernel, "available", lambda: False)
    assert product_form(1, 10**9, threads=1) == "mm"  # one thread
    assert product_form(1, 10**6, threads=2, cache_bytes=2 * 10**6) == "mm"  # weights inside the cache
    if "onednn" in product_forms() and torch.backends.mkldnn.is_available():
        assert product_form(1, 10**9, threads=2, cache_bytes=10**6) == product_form(8, 10, threads=1) == "onednn"
    monkeypatch.undo()
    model = tiny_decoder()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, many = packed_decoder(model, rows=1), packed_decoder(model, rows=4)
        assert one is not None and many is not None
        assert (one.form, many.form) == (product_form(1, 10**9, threads=1), product_form(4, 10**9, threads=1))
        assert (many is one) == (many.form == one.form)  # one copy per form
        assert packed_decoder(model, rows=1) is one  # each form built once
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="product form"):
        PackedDecoder(model, "blas")
    cache = last_level_cache_bytes()  # this machine's, read from the OS
    assert cache is None or 64 << 10 <= cache <= 4 << 30
