"""Text in, text out: :func:`generate` completes a prompt with a decoder or answers it with an
encoder-decoder, and returns a :class:`GenerationResult`.

What this module owns: the text around the decode loops. A prompt becomes the ids the model reads
(BOS first where the model's tokenizer adds one; an encoder-decoder's input inside its template),
checked against the context window or, with ``truncate="left"``, cut from the left; the new ids
become the completion, decoded together with the prompt so that a character whose bytes straddle the
boundary comes out whole; ``stream`` receives the completion piece by piece, never half a character.
The result records the settings with the seed resolved, the speed, and each step's explanation with
its candidates as text.

Not here: the decode loops over token ids (:func:`~lmkit.infer.generate.generate_ids`,
:func:`~lmkit.infer.generate.generate_seq2seq_ids`, the KV cache) are :mod:`lmkit.infer.generate`;
choosing each token is :mod:`lmkit.infer.sampling`; the ``lmkit generate`` command is
:mod:`lmkit.cli.infer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import nn

from lmkit.errors import LmkitError
from lmkit.infer.generate import EvalMode, LoopResult, StopReason, decoder_loop, decodes_of, model_device, seq2seq_loop
from lmkit.infer.sampling import GenerationConfig, StepExplanation, make_generator
from lmkit.models import LanguageModel
from lmkit.models.decoder import Decoder
from lmkit.models.encdec import EncoderDecoder


@dataclass
class GenerationResult:
    """One generation: the prompt, what was added, and how it went."""

    prompt: str
    completion: str
    text: str  # prompt + completion
    prompt_ids: list[int]  # the ids the model read (after truncation)
    token_ids: list[int]  # generated ids (including a final EOS when it stopped there)
    stop_reason: StopReason
    tokens_per_s: float
    elapsed_s: float
    truncated_tokens: int = 0  # prompt tokens dropped by truncate="left"
    steps: list[StepExplanation] = field(default_factory=list)  # with explain=True
    settings: dict[str, Any] = field(default_factory=dict)  # GenerationConfig fields, seed resolved

    def to_dict(self) -> dict[str, Any]:
        d = {
            "prompt": self.prompt,
            "completion": self.completion,
            "text": self.text,
            "tokens": self.token_ids,
            "prompt_tokens": len(self.prompt_ids),
            "new_tokens": len(self.token_ids),
            "truncated_prompt_tokens": self.truncated_tokens,
            "stop_reason": self.stop_reason,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "elapsed_s": round(self.elapsed_s, 4),
            "settings": self.settings,
        }
        if self.steps:
            d["steps"] = [asdict(s) for s in self.steps]
        return d


def _completion_text(tokenizer: Any, prompt_ids: list[int], new_ids: list[int], seq2seq: bool = False) -> str:
    """Text the new ids add after the prompt, decoded together with the prompt so that a character
    whose bytes straddle the boundary comes out whole. An encoder-decoder's output keeps its
    sentinels (``<extra_id_0> filled span <extra_id_1> ...``), which say which gap each span fills."""
    if seq2seq:
        plain = {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id}
        return tokenizer.decode([i for i in new_ids if i not in plain], skip_special=False)
    if not prompt_ids:
        return tokenizer.decode(new_ids)
    before = tokenizer.decode(prompt_ids)
    full = tokenizer.decode(prompt_ids + new_ids)
    return full[len(before) :] if full.startswith(before) else tokenizer.decode(new_ids)


def generate(
    model: LanguageModel,
    tokenizer: Any,
    prompt: str,
    gen_cfg: GenerationConfig | None = None,
    explain: bool = False,
    stream: Callable[[str], None] | None = None,
    start_id: int | None = None,
) -> GenerationResult:
    """Complete ``prompt`` with a decoder (or answer it with an encoder-decoder).

    Decoder: the prompt (after BOS where the model's tokenizer adds one) is read once into the KV
    cache, then one token is added per step until any of the model's eos ids; "" starts from BOS. A prompt longer than the context window is an
    error, or with ``truncate="left"`` loses its first tokens so that the prompt and
    ``max_new_tokens`` fit. Encoder-decoder: see :func:`generate_seq2seq`.
    ``stream`` receives the completion piece by piece as it is generated.
    """
    gen_cfg = gen_cfg or GenerationConfig()
    gen_cfg.validate()
    if decodes_of(model) == "seq2seq":
        return generate_seq2seq(
            cast(EncoderDecoder, model), tokenizer, prompt, gen_cfg, explain=explain, stream=stream, start_id=start_id
        )
    decoder = cast(Decoder, model)  # decodes_of lets only the causal and seq2seq families through
    ids = tokenizer.prompt_ids(prompt)  # BOS first where the model's tokenizer adds one; "" is BOS alone
    window = model.cfg.max_seq_len
    truncated = 0
    if gen_cfg.truncate == "left":
        keep = max(1, min(window - 1, window - gen_cfg.max_new_tokens))
        if len(ids) > keep:
            truncated = len(ids) - keep
            ids = ids[truncated:]
    elif len(ids) >= window:
        raise LmkitError(
            f"prompt is {len(ids)} tokens but the context window is {window} tokens "
            f"(at most {window - 1} leave room for a new token); shorten it or use --truncate left"
        )
    return _run_text(
        model,
        tokenizer,
        prompt,
        ids,
        truncated,
        gen_cfg,
        explain,
        stream,
        lambda inp, g, on_tok: decoder_loop(
            decoder, inp, gen_cfg, True, tokenizer.eos_ids, g, explain, on_tok, tokenizer.vocab_size
        ),
    )


def generate_seq2seq(
    model: EncoderDecoder,
    tokenizer: Any,
    prompt: str,
    gen_cfg: GenerationConfig | None = None,
    explain: bool = False,
    stream: Callable[[str], None] | None = None,
    start_id: int | None = None,
) -> GenerationResult:
    """Encoder-decoder generation from text: the encoder reads ``prompt`` + EOS once (inside the model's own
    template where its tokenizer puts tokens before a text: BART's ``<s> .. </s>``), the decoder
    writes from ``start_id`` (default: the pad token, T5's decoder start) until EOS.

    The prompt may hold special tokens such as ``<extra_id_0>`` (span infilling); the result's
    ``text`` is the prompt followed by the decoded output.
    """
    gen_cfg = gen_cfg or GenerationConfig()
    gen_cfg.validate()
    if start_id is None:
        start_id = tokenizer.decoder_start_id
    ids = tokenizer.encoder_ids(prompt)
    window = model.cfg.max_seq_len
    truncated = 0
    if len(ids) > window:
        if gen_cfg.truncate != "left":
            raise LmkitError(
                f"input is {len(ids)} tokens but the encoder's context window is {window} tokens; "
                "shorten it or use --truncate left"
            )
        truncated = len(ids) - window
        ids = ids[truncated:]
    return _run_text(
        model,
        tokenizer,
        prompt,
        ids,
        truncated,
        gen_cfg,
        explain,
        stream,
        lambda inp, g, on_tok: seq2seq_loop(
            model, inp, gen_cfg, start_id, True, tokenizer.eos_id, g, explain, on_tok, vocab=tokenizer.vocab_size
        ),
        seq2seq=True,
    )


def _run_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    ids: list[int],
    truncated: int,
    gen_cfg: GenerationConfig,
    explain: bool,
    stream: Callable[[str], None] | None,
    loop: Callable[[torch.Tensor, torch.Generator | None, Callable[[int], None] | None], LoopResult],
    seq2seq: bool = False,
) -> GenerationResult:
    device = model_device(model)
    generator, seed = make_generator(gen_cfg.seed, device) if not gen_cfg.greedy else (None, gen_cfg.seed)
    context_ids = [] if seq2seq else ids  # what the completion text continues
    on_token = None
    if stream is not None:
        made: list[int] = []
        shown = [0]

        def on_token(tok: int) -> None:
            made.append(tok)
            text = _completion_text(tokenizer, context_ids, made, seq2seq)
            if text.endswith("\ufffd"):
                return  # a character's bytes are not all there yet
            if len(text) > shown[0]:
                stream(text[shown[0] :])
                shown[0] = len(text)

    inp = torch.tensor([ids], dtype=torch.long, device=device)
    t0 = time.perf_counter()
    with torch.inference_mode(), EvalMode(model):
        res = loop(inp, generator, on_token)
    elapsed = time.perf_counter() - t0
    new = res.tokens[0].tolist()
    text_ids = new[:-1] if new and res.stop_reason == "eos" else new
    completion = _completion_text(tokenizer, context_ids, text_ids, seq2seq)
    if stream is not None and len(completion) > shown[0]:
        stream(completion[shown[0] :])
    for s in res.steps:
        for c in s.candidates:
            c.token = tokenizer.token_str(c.token_id)
    settings = asdict(gen_cfg)
    settings["seed"] = seed
    if seq2seq:
        text = prompt + ("\n" if prompt and completion else "") + completion
    else:
        text = prompt + completion
    return GenerationResult(
        prompt=prompt,
        completion=completion,
        text=text,
        prompt_ids=ids,
        token_ids=new,
        stop_reason=res.stop_reason,
        tokens_per_s=len(new) / elapsed if elapsed > 0 else 0.0,
        elapsed_s=elapsed,
        truncated_tokens=truncated,
        steps=res.steps,
        settings=settings,
    )


__all__ = ["GenerationResult", "generate", "generate_seq2seq"]
