"""The serving engine's rows (lmkit.serve.rows, lmkit.serve.seq2seq): every decoder layout the engine
serves decodes through the packed step (or, where that does not take the model, its own modules),
and each row of a batch, with rows joining and leaving, gets the logits the request gets alone
(1e-5); encoder-decoder requests batched give what each gives alone, logits and served tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from lmkit.config import ModelConfig
from lmkit.infer.generate import generate_ids, generate_seq2seq_ids
from lmkit.infer.packed import PackedDecoder
from lmkit.infer.products import product_form, product_forms
from lmkit.infer.sampling import GenerationConfig
from lmkit.model_variants import RopeScaling
from lmkit.models import build_model
from lmkit.models.decoder import Decoder
from lmkit.models.encdec import EncoderDecoder
from lmkit.serve.batcher import Engine, Event, Job, wait_idle
from lmkit.serve.rows import DecoderRows, ModuleRows, PackedRows, decoder_rows
from lmkit.serve.seq2seq import Seq2SeqRows


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY: dict[str, Any] = {"vocab_size": 300, "d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 48}
LAYOUTS: dict[str, dict[str, Any]] = {
    "llama-gqa": {"n_kv_heads": 2},
    "llama3-scaled-rope": {  # Llama 3.2's layout: rope scaling, heads wider than d_model / n_heads
        "n_kv_heads": 2,
        "head_size": 12,
        "rope_scaling": RopeScaling(type="llama3", factor=8.0, original_max_len=16),
    },
    "qwen-biases": {"n_kv_heads": 2, "bias": "qkv"},
    "gpt2-learned": {
        "pos_encoding": "learned",
        "norm": "layer",
        "mlp": "plain",
        "activation": "gelu_tanh",
        "bias": "all",
    },
    "neox-partial-rotary": {
        "norm": "layer",
        "mlp": "plain",
        "activation": "gelu",
        "residual": "parallel",
        "rotary_fraction": 0.25,
        "bias": "all",
        "tie_embeddings": False,
    },
    "bloom-alibi": {"pos_encoding": "alibi", "norm": "layer", "mlp": "plain", "activation": "gelu", "embed_norm": True},
    "alibi-gqa": {"pos_encoding": "alibi", "n_kv_heads": 2},  # the packed step declines it: the module path
}


def _decoder(layout: str) -> Decoder:
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="decoder", **TINY, **LAYOUTS[layout])).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that a misplaced one shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    assert isinstance(model, Decoder)
    return model


@pytest.mark.parametrize(
    ("layout", "form"), [(a, f) for a in sorted(LAYOUTS) for f in product_forms() if a != "alibi-gqa" or f == "mm"]
)
def test_rows_joining_and_leaving_equal_each_request_alone(layout: str, form: str) -> None:
    model = _decoder(layout)
    pool: DecoderRows = decoder_rows(model, capacity=4, max_len=40)
    kind = ModuleRows if layout == "alibi-gqa" else PackedRows
    assert type(pool).__name__ == kind.__name__  # (isinstance would narrow pool's type for what follows)
    if isinstance(pool, PackedRows):  # each product kernel, a lone row stepped with the other one;
        # room for 4 positions at first: the pool grows as rows do
        other = next((f for f in product_forms() if f != form), form)
        pool = PackedRows(
            PackedDecoder(model, form), capacity=4, max_len=40, start_len=4, one_row=PackedDecoder(model, other)
        )
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 300, (1, n), generator=g) for n in (3, 9, 5, 7, 6)]
    seqs: list[torch.Tensor] = []

    def join(p: torch.Tensor, echo: bool) -> None:
        logits, state = pool.prefill(p, every=echo)
        with torch.no_grad():
            full = model(p)[0]
        assert logits.shape[1] == (p.shape[1] if echo else 1)
        assert float((logits[0] - (full if echo else full[-1:])).abs().max()) < 1e-5
        pool.add(state, 0)
        seqs.append(p.clone())

    with torch.no_grad():
        join(prompts[0], False)
        for step in range(7):
            if step == 1:
                join(prompts[1], True)
                join(prompts[2], False)
            if step == 3:  # the second request leaves (the last takes its slot), two join
                assert pool.remove([1]) == [(2, 1)]
                seqs = [seqs[0], seqs[2]]
                join(prompts[3], False)
                join(prompts[4], False)
            if step == 5:  # two leave at once, the first among them
                pool.remove([0, 2])
                seqs = [seqs[3], seqs[1]]  # row 3 moves into slot 2, then on into slot 0; row 1 stays
            nxt = torch.randint(0, 300, (len(seqs), 1), generator=g)
            out = pool.step(nxt)  # (n, V)
            for i, s in enumerate(seqs):
                seqs[i] = torch.cat([s, nxt[i : i + 1]], dim=1)
                alone = model(seqs[i])[0, -1]
                assert float((out[i] - alone).abs().max()) < 1e-5, (layout, step, i)


def test_a_lone_row_steps_with_the_one_row_kernel_on_the_pool_cache() -> None:
    model = _decoder("llama-gqa")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # one thread: without the compiled kernel, MKL for one row, oneDNN for rows
        pool = decoder_rows(model, capacity=4, max_len=40)
        forms = product_form(4, 10**9), product_form(1, 10**9)
    finally:
        torch.set_num_threads(threads)
    assert isinstance(pool, PackedRows)
    assert pool.packed.form == forms[0]  # a second copy only where the one-row form differs
    assert (pool.one_row.form if pool.one_row is not None else forms[0]) == forms[1]
    # the step really multiplies with the given copy: one whose vocabulary projection is doubled
    doubled = PackedDecoder(model, "mm")
    doubled.out = doubled.out * 2.0
    ids = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = (PackedRows(PackedDecoder(model, "mm"), 2, 40, one_row=w) for w in (None, doubled))
        for pool_ in (a, b):
            pool_.add(pool_.prefill(ids, every=False)[1], 0)
        nxt = torch.tensor([[7]])
        torch.testing.assert_close(b.step(nxt), 2.0 * a.step(nxt), rtol=1e-5, atol=1e-5)


def _run(engine: Engine, jobs: list[Job]) -> None:
    engine.submit(jobs)
    assert wait_idle(engine, timeout=60)


def _job(prompt: list[int], n: int, out: list[Event], **settings: Any) -> Job:
    return Job(prompt, n, GenerationConfig(max_new_tokens=n, stop_at_eos=False, **settings), out.append)


def _tokens(events: list[Event]) -> list[int]:
    assert events[-1].kind == "done", events[-1]
    return [t.token_id for e in events if e.kind == "token" for t in e.tokens]


class _Tok:
    """The least of a tokenizer the engine reads (ids only; no text matters here)."""

    vocab_size, pad_id, bos_id, eos_id, decoder_start_id = 300, 0, 1, 2, 0
    eos_ids = (2,)
    special_ids = (0, 1, 2)

    def token_bytes(self, i: int) -> bytes:
        return b"x"

    def decode(self, ids: list[int]) -> str:
        return "x" * len(ids)


@pytest.mark.parametrize("layout", ["llama-gqa", "bloom-alibi"])
def test_served_tokens_equal_lmkit_generate_alone_and_among_others(layout: str) -> None:
    model = _decoder(layout)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (4, 11, 7, 4)]
    want = [
        generate_ids(model, torch.tensor([p]), GenerationConfig(max_new_tokens=9 + i, stop_at_eos=False))[
            0, len(p) :
        ].tolist()
        for i, p in enumerate(prompts)
    ]
    engine = Engine(model, _Tok(), max_batch=3)
    try:
        events: list[list[Event]] = [[] for _ in prompts]
        _run(engine, [_job(p, 9 + i, events[i]) for i, p in enumerate(prompts)])  # 3 at once, then the 4th joins
        assert [_tokens(e) for e in events] == want
        assert engine.stats["batched_rows"] > engine.stats["steps"]  # rows were stepped together
    finally:
        engine.close()


def _encdec(kind: str) -> EncoderDecoder:
    torch.manual_seed(0)
    extra: dict[str, Any] = (
        {
            "norm": "layer",
            "residual": "post",
            "bias": "all",
            "mlp": "plain",
            "activation": "gelu",
            "embed_norm": True,
            "pos_encoding": "learned",
            "max_target_len": 32,
        }
        if kind == "bart"
        else {}
    )
    cfg = ModelConfig(family="encdec", vocab_size=300, d_model=32, n_layers=2, n_heads=4, max_seq_len=40, **extra)
    model = build_model(cfg).eval()
    assert isinstance(model, EncoderDecoder)
    return model


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_encoder_decoder_rows_equal_each_request_alone(kind: str) -> None:
    model = _encdec(kind)
    pool = Seq2SeqRows(model, capacity=4)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 12, 3, 8)]
    decoded: list[list[int]] = []  # each row's decoder input so far

    def alone(prompt: list[int], dec: list[int]) -> torch.Tensor:
        enc = model.encode(torch.tensor([prompt]))
        return model.logits(model.decode(torch.tensor([dec]), enc)[0, -1])

    with torch.no_grad():
        order = [0, 1, 2]
        for p in (prompts[i] for i in order):
            pool.add(p)
            decoded.append([0])
        for step in range(6):
            if step == 2:  # the first leaves, the longest prompt joins
                assert pool.remove([0]) == [(2, 0)]
                order, decoded = [order[2], order[1]], [decoded[2], decoded[1]]
                pool.add(prompts[3])
                order.append(3)
                decoded.append([0])
            out = pool.step(torch.tensor([[d[-1]] for d in decoded]))
            for i, d in enumerate(decoded):
                assert float((out[i] - alone(prompts[order[i]], d)).abs().max()) < 1e-5, (kind, step, i)
            nxt = torch.randint(3, 300, (len(decoded),), generator=g).tolist()
            decoded = [d + [t] for d, t in zip(decoded, nxt)]


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_served_encoder_decoder_requests_are_batched_and_equal_one_at_a_time(kind: str) -> None:
    model = _encdec(kind)
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 12, 3, 8)]
    greedy = GenerationConfig(max_new_tokens=10, stop_at_eos=False)
    want = [generate_seq2seq_ids(model, torch.tensor([p]), greedy, start_id=0)[0].tolist() for p in prompts]
    engine = Engine(model, _Tok(), max_batch=4)
    try:
        events: list[list[Event]] = [[] for _ in prompts]
        sampled: list[list[Event]] = [[] for _ in prompts]
        _run(engine, [_job(p, 10, events[i]) for i, p in enumerate(prompts)])
        assert [_tokens(e) for e in events] == want
        assert engine.stats["batched_rows"] >= 3 * engine.stats["steps"]  # all four stepped together
        _run(engine, [_job(p, 10, sampled[i], do_sample=True, seed=7) for i, p in enumerate(prompts)])
    finally:
        engine.close()
    one = Engine(model, _Tok(), max_batch=1)  # one at a time: the same sampled tokens
    try:
        for i, p in enumerate(prompts):
            alone: list[Event] = []
            _run(one, [_job(p, 10, alone, do_sample=True, seed=7)])
            assert _tokens(alone) == _tokens(sampled[i])
    finally:
        one.close()


def test_padding_rows_past_the_tokenizer_are_never_served() -> None:
    """A model with more embedding rows than its tokenizer has tokens: served tokens, like
    `lmkit generate`'s, come from the tokenizer's ids only; so do the explain view's logits."""
    model = _decoder("llama-gqa")  # 300 rows

    class Small(_Tok):
        vocab_size = 120

    prompt = [5, 17, 200, 3]
    greedy = GenerationConfig(max_new_tokens=12, stop_at_eos=False)
    want = generate_ids(model, torch.tensor([prompt]), greedy, vocab=120)[0, len(prompt) :].tolist()
    engine = Engine(model, Small(), max_batch=2)
    try:
        events: list[Event] = []
        _run(engine, [_job(prompt, 12, events)])
        assert _tokens(events) == want and max(want) < 120
        assert engine.next_token_logits(prompt).shape == (120,)
    finally:
        engine.close()
