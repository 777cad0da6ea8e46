"""Token generation: greedy and sampled decoding with a KV cache, explained step by step.

What this module owns:

* The decode loops over token ids: :func:`generate_ids` (token ids in, token ids out) for
  decoders, :func:`generate_seq2seq_ids` for encoder-decoders, and the loops under them
  (:func:`decode_loop`, :func:`decoder_loop`, :func:`seq2seq_loop`) that the text-level API runs too.
* Not here: text in, text out (:func:`~lmkit.infer.text.generate`, its ``GenerationResult``) is
  :mod:`lmkit.infer.text`; choosing each token (settings, temperature, top-k, top-p, an explanation
  and its table, never an id past the tokenizer's: ``within_vocabulary``) is :mod:`lmkit.infer.sampling`;
  the hand-laid CPU decode step is :mod:`lmkit.infer.packed`; the ``lmkit generate`` command is
  :mod:`lmkit.cli.infer`.

How decoding runs. A decoder reads the prompt once (the "prefill", which fills the key/value
cache) and then feeds one new token per step, attending to the cached keys/values of everything
before it. ``generate_ids(..., cache=False)`` instead recomputes the whole sequence every step:
slow, but obviously right, and the reference the tests compare the cached path against.
A plain lmkit ``Decoder`` runs the cached path through its :class:`PackedDecoder` (same maths,
fewer operations); other models use their own ``forward`` with a
:class:`~lmkit.models.layers.KVCache`. Greedy decoding skips all sampling work.
An encoder-decoder runs its encoder once, projects the encoder states to every decoder layer's
cross-attention keys/values once, and decodes from a start token with a self-attention cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

from lmkit.errors import LmkitError
from lmkit.infer.packed import packed_decoder
from lmkit.infer.sampling import GenerationConfig, StepExplanation, choose_next, make_generator, within_vocabulary
from lmkit.models import LanguageModel
from lmkit.models.decoder import Decoder
from lmkit.models.encdec import EncoderDecoder
from lmkit.models.registry import SPECS, Decodes

StopReason = Literal["eos", "max_new_tokens", "context window"]


# --------------------------------------------------------------------------- the decode loop


@dataclass
class LoopResult:
    """What one decode loop made, and why it stopped."""

    tokens: torch.Tensor  # (B, n) generated ids
    stop_reason: StopReason
    steps: list[StepExplanation]


def decode_loop(
    prefill: Callable[[], torch.Tensor],
    step: Callable[[torch.Tensor], torch.Tensor],
    n_max: int,
    limit_reason: StopReason,
    gen_cfg: GenerationConfig,
    generator: torch.Generator | None,
    eos_id: int | Sequence[int] | None,
    explain: bool = False,
    on_token: Callable[[int], None] | None = None,
    vocab: int | None = None,
) -> LoopResult:
    """Run choose_next / step until EOS (every row), ``n_max`` tokens or the context limit.

    ``prefill()`` returns the first next-token logits (B, V); ``step(tokens (B, 1))`` feeds the
    chosen tokens and returns the following logits. ``limit_reason`` is the stop reason when
    ``n_max`` tokens were made (max_new_tokens, or the context window when that is smaller).
    ``eos_id``: one id or several (a model's eos tokens); rows that have finished keep emitting the
    first until every row has.
    """
    logits = within_vocabulary(prefill(), vocab)  # (B, V): a padding row past the tokenizer's is never chosen
    B = logits.shape[0]
    out = torch.empty(B, n_max, dtype=torch.long, device=logits.device)
    stops = [] if eos_id is None else [eos_id] if isinstance(eos_id, int) else list(eos_id)  # any ends a row
    watch_eos = gen_cfg.stop_at_eos and bool(stops)
    finished = torch.zeros(B, dtype=torch.bool, device=logits.device) if watch_eos and B > 1 else None
    fast_greedy = gen_cfg.greedy and not explain
    steps: list[StepExplanation] = []
    n, reason = 0, limit_reason
    while n < n_max:
        if fast_greedy:
            token = logits.argmax(dim=-1)  # (B,)
        else:
            token, expl = choose_next(logits, gen_cfg, generator, explain=explain, step=n)
            if expl:
                steps.append(expl[0])
        if finished is not None:
            token = token.masked_fill(finished, stops[0])
        out[:, n] = token
        n += 1
        if on_token is not None:
            on_token(int(token[0]))
        if watch_eos:
            if finished is None:
                if int(token[0]) in stops:
                    reason = "eos"
                    break
            else:
                finished |= torch.isin(token, torch.tensor(stops, device=token.device))
                if bool(finished.all()):
                    reason = "eos"
                    break
        if n < n_max:
            logits = within_vocabulary(step(token[:, None]), vocab)
    return LoopResult(out[:, :n], reason, steps)


# --------------------------------------------------------------------------- decoder


class EvalMode:
    """Put a module in eval mode for a block and restore its previous mode after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> None:
        if self.was_training:
            self.model.eval()

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train()


def model_device(model: nn.Module) -> torch.device:
    """Where the model's tensors live (parameters, or buffers for a fully quantized model)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def decodes_of(model: nn.Module) -> Decodes:
    """How ``model`` writes text (``causal`` or ``seq2seq``: its family's), or one line saying it does not."""
    family = getattr(getattr(model, "cfg", None), "family", None)
    spec = SPECS.get(str(family))
    if spec is None:
        expected = " or ".join(s.name for s in SPECS.values() if s.generates)
        raise LmkitError(f"cannot generate with a model of family {family!r} (expected {expected})")
    if not spec.generates:
        raise LmkitError(f"{spec.name} models do not generate text; use `lmkit fill-mask`")
    return spec.decodes


def decoder_loop(
    model: Decoder,
    input_ids: torch.Tensor,
    gen_cfg: GenerationConfig,
    cache: bool,
    eos_id: int | Sequence[int] | None,
    generator: torch.Generator | None,
    explain: bool = False,
    on_token: Callable[[int], None] | None = None,
    vocab: int | None = None,
) -> LoopResult:
    """A decoder's loop over ``input_ids`` (B, T): prompt and new tokens in one context window,
    through the packed step, the model's own KV cache, or (``cache=False``) the whole sequence."""
    window = model.cfg.max_seq_len
    B, T = input_ids.shape
    if T < 1:
        raise LmkitError("cannot generate from an empty sequence: give at least one token (e.g. BOS)")
    if T >= window:
        raise LmkitError(
            f"prompt is {T} tokens but the context window is {window} tokens "
            f"(at most {window - 1} leave room for a new token); shorten it or truncate it "
            "from the left (--truncate left)"
        )
    n_max = min(gen_cfg.max_new_tokens, window - T)
    limit: StopReason = "max_new_tokens" if n_max == gen_cfg.max_new_tokens else "context window"
    seq = input_ids

    step: Callable[[torch.Tensor], torch.Tensor]
    if not cache:

        def prefill() -> torch.Tensor:
            return model(seq)[:, -1]

        def step(tok: torch.Tensor) -> torch.Tensor:
            nonlocal seq
            seq = torch.cat([seq, tok], dim=1)  # (B, T + n)
            return model(seq)[:, -1]
    else:
        packed = packed_decoder(model, rows=B)
        if packed is not None:
            session = packed.start(B, T + n_max)

            def prefill() -> torch.Tensor:
                return session.forward(seq)

            step = session.forward
        else:
            kv = model.new_cache(B, T + n_max)

            def prefill() -> torch.Tensor:
                return model(seq, kv)[:, -1]

            def step(tok: torch.Tensor) -> torch.Tensor:
                return model(tok, kv)[:, -1]

    return decode_loop(prefill, step, n_max, limit, gen_cfg, generator, eos_id, explain, on_token, vocab)


def generate_ids(
    model: LanguageModel,
    input_ids: torch.Tensor,
    gen_cfg: GenerationConfig,
    cache: bool = True,
    eos_id: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    vocab: int | None = None,
) -> torch.Tensor:
    """Continue each row of input_ids (B, T) with a decoder; returns (B, T + n) ids (none past ``vocab``).

    ``cache=True`` prefills the prompt once and feeds one token per step through the KV cache;
    ``cache=False`` recomputes the whole sequence every step (the reference). Stops after
    ``max_new_tokens``, when the context window is full, or (with ``eos_id`` and
    ``stop_at_eos``) once every row has produced ``eos_id`` (finished rows are padded with it).
    ``generator`` defaults to one seeded with ``gen_cfg.seed``.
    """
    gen_cfg.validate()
    if decodes_of(model) != "causal":
        raise LmkitError("generate_ids is for decoder models; use generate_seq2seq_ids for encoder-decoders")
    device = model_device(model)
    if generator is None and not gen_cfg.greedy:
        generator, _ = make_generator(gen_cfg.seed, device)
    ids = input_ids.to(device)
    with torch.inference_mode(), EvalMode(model):
        # a model that decodes causally (checked above) is a Decoder
        res = decoder_loop(cast(Decoder, model), ids, gen_cfg, cache, eos_id, generator, vocab=vocab)
    return torch.cat([ids, res.tokens], dim=1)


# --------------------------------------------------------------------------- encoder-decoder


def seq2seq_loop(
    model: EncoderDecoder,
    input_ids: torch.Tensor,
    gen_cfg: GenerationConfig,
    start_id: int,
    cache: bool,
    eos_id: int | Sequence[int] | None,
    generator: torch.Generator | None,
    explain: bool = False,
    on_token: Callable[[int], None] | None = None,
    attention_mask: torch.Tensor | None = None,
    vocab: int | None = None,
) -> LoopResult:
    """An encoder-decoder's loop: encode ``input_ids`` (B, S) once, then decode from ``start_id``
    (with ``cache``, the cross-attention keys/values projected once and a self-attention cache)."""
    B, S = input_ids.shape
    if S > model.cfg.max_seq_len:
        raise LmkitError(
            f"input is {S} tokens but the encoder's context window is {model.cfg.max_seq_len} "
            "tokens; shorten it or truncate it from the left (--truncate left)"
        )
    n_max = gen_cfg.max_new_tokens
    enc = model.encode(input_ids, attention_mask)  # (B, S, C), once
    start = torch.full((B, 1), start_id, dtype=torch.long, device=input_ids.device)
    if cache:
        cross = model.cross_kv(enc)  # every decoder layer's cross keys/values, once
        kv = model.new_cache(B, n_max)

        def run(tok: torch.Tensor) -> torch.Tensor:
            h = model.decode(tok, None, attention_mask, cache=kv, cross_kv=cross)  # (B, 1, C)
            return model.logits(h[:, -1])

        def prefill() -> torch.Tensor:
            return run(start)
    else:
        dec = start

        def prefill() -> torch.Tensor:
            return model.logits(model.decode(dec, enc, attention_mask)[:, -1])

        def run(tok: torch.Tensor) -> torch.Tensor:
            nonlocal dec
            dec = torch.cat([dec, tok], dim=1)
            return model.logits(model.decode(dec, enc, attention_mask)[:, -1])

    return decode_loop(prefill, run, n_max, "max_new_tokens", gen_cfg, generator, eos_id, explain, on_token, vocab)


def generate_seq2seq_ids(
    model: LanguageModel,
    input_ids: torch.Tensor,
    gen_cfg: GenerationConfig,
    start_id: int,
    eos_id: int | Sequence[int] | None = None,
    cache: bool = True,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    vocab: int | None = None,
) -> torch.Tensor:
    """Encoder-decoder generation: encode input_ids (B, S) once, then decode from ``start_id``.

    Returns the generated decoder ids (B, n) (without the start token); with ``vocab`` (the tokenizer's
    size) never an id past it (an embedding's padding rows). ``cache=False``
    re-runs the decoder over its whole output every step (the reference for the cached path).
    The model must provide ``encode``, ``cross_kv``, ``decode``, ``logits`` and ``new_cache``
    (``lmkit.models.encdec.EncoderDecoder``).
    """
    gen_cfg.validate()
    if decodes_of(model) != "seq2seq":
        raise LmkitError("generate_seq2seq_ids is for encoder-decoder models")
    device = model_device(model)
    if generator is None and not gen_cfg.greedy:
        generator, _ = make_generator(gen_cfg.seed, device)
    with torch.inference_mode(), EvalMode(model):
        # a model that decodes seq2seq (checked above) is an EncoderDecoder
        res = seq2seq_loop(
            cast(EncoderDecoder, model),
            input_ids.to(device),
            gen_cfg,
            start_id,
            cache,
            eos_id,
            generator,
            attention_mask=attention_mask,
            vocab=vocab,
        )
    return res.tokens


__all__ = ["StopReason", "generate_ids", "generate_seq2seq_ids"]
