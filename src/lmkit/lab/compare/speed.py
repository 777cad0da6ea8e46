"""How fast a model reads a prompt and writes tokens on this machine, at batch 1.

What this module owns: :func:`measure_speed`, which times lmkit's own decode loops
(:func:`lmkit.infer.generate.generate_ids` for a decoder, :func:`~lmkit.infer.generate.generate_seq2seq_ids`
for an encoder-decoder) greedily, never stopping at EOS: a run that adds one token (the prompt's
prefill) and a run that adds ``new_tokens``. Prompt tokens/s is the prompt's length over the first;
generated tokens/s is the tokens the second adds beyond the first over the time it takes beyond
the first (the decode steps alone; where timing noise on a busy machine leaves no time beyond the
first, all ``new_tokens`` over the second run's time). Each figure is the best of ``repeats`` timings after one
warm-up run. An encoder generates nothing: it has no speed here (None).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from lmkit.errors import LmkitError
from lmkit.infer.generate import generate_ids, generate_seq2seq_ids
from lmkit.infer.sampling import GenerationConfig
from lmkit.models.registry import spec_of


def _timed(run: Callable[[], int], repeats: int) -> tuple[float, int]:
    """(best seconds, tokens added) of ``repeats`` calls of ``run`` after one warm-up call."""
    added = run()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        added = run()
        best = min(best, time.perf_counter() - t0)
    return best, added


def measure_speed(
    model: Any, tokenizer: Any, text: str, prompt_tokens: int = 128, new_tokens: int = 32, repeats: int = 2
) -> dict[str, Any] | None:
    """Prompt and generated tokens per second at batch 1 on the first ``prompt_tokens`` tokens of
    ``text`` (fewer where the context window is shorter), or None for an encoder."""
    cfg = model.cfg
    decodes = spec_of(cfg.family).decodes
    if decodes == "none":
        return None
    if prompt_tokens < 1 or new_tokens < 2:
        raise LmkitError(f"speed needs at least 1 prompt token and 2 new tokens, got {prompt_tokens} and {new_tokens}")
    if decodes == "seq2seq":  # the prompt is encoded; the output has its own window
        new = max(2, min(new_tokens, cfg.max_target_len - 1))
        ids = tokenizer.encoder_ids(text)[: min(prompt_tokens, cfg.max_seq_len)]
        start = tokenizer.decoder_start_id

        def run(n: int) -> Callable[[], int]:
            def go() -> int:
                inp = torch.tensor([ids], dtype=torch.long)
                out = generate_seq2seq_ids(model, inp, GenerationConfig(max_new_tokens=n, stop_at_eos=False), start)
                return int(out.shape[1])

            return go
    else:
        new = max(2, min(new_tokens, cfg.max_seq_len // 2))
        ids = tokenizer.prompt_ids(text)[: min(prompt_tokens, cfg.max_seq_len - new)]

        def run(n: int) -> Callable[[], int]:
            def go() -> int:
                inp = torch.tensor([ids], dtype=torch.long)
                out = generate_ids(model, inp, GenerationConfig(max_new_tokens=n, stop_at_eos=False))
                return int(out.shape[1]) - len(ids)

            return go

    if not ids:
        raise LmkitError("the text for the speed measurement gave no prompt tokens")
    t_one, one = _timed(run(1), repeats)
    t_all, made = _timed(run(new), repeats)
    decode_s = t_all - t_one
    return {
        "prompt_tokens": len(ids),
        "new_tokens": made,
        "prompt_tokens_per_s": len(ids) / t_one if t_one > 0 else None,
        "generated_tokens_per_s": (made - one) / decode_s if decode_s > 0 and made > one else made / t_all,
        "prefill_s": t_one,
        "generate_s": t_all,
    }


__all__ = ["measure_speed"]
