"""Parity check of an export: load it with transformers and compare it with the lmkit model.

:func:`verify_export` (what ``lmkit export`` runs unless ``--no-verify``) loads the folder with its
Auto class, compares the logits on a probe batch (:func:`probe_ids`) with lmkit's, and requires
greedy decoding (decoder, encdec) or the top-1 fill-mask prediction (encoder) to agree token for
token. The tolerance is ``max |Δlogit| <= PARITY_RTOL · max(1, max |logit|)`` in fp32 (1e-4
relative: far above float32 rounding, far below any mapping mistake, which moves logits by O(1)).
Observed on the tiny configs: 0 for lmkit's decoder and encdec (same kernels), up to about 1e-6 for
the other classes (a different order of the same float operations: fused projections, ALiBi added
before or after scaling; RoFormer's sinusoid table is computed in float64). The class loaded must be
the one export wrote (``lmkit.models.hf.target_of``).

lmkit's greedy tokens (:func:`lmkit_greedy`) come from the model's own forward pass, re-run over
the whole sequence at each step: the plainest reference, with no generation machinery between the
weights and the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.models.hf import adapter_or_error, target_of

if TYPE_CHECKING:
    from torch import nn

    from lmkit.config import ModelConfig
    from lmkit.tokenizer import Tokenizer

PARITY_RTOL = 1e-4  # max |Δlogit| allowed, relative to max(1, max |logit|), in fp32


def probe_ids(cfg: ModelConfig, tok: Tokenizer | None, length: int = 16) -> list[int]:
    """Token ids to compare logits on: a sentence when there is a tokenizer, else fixed ids."""
    length = min(length, cfg.max_seq_len)
    ids: list[int] = []
    if tok is not None:
        ids = tok.encode("The quick brown fox jumps over the lazy dog, and then it sleeps.")
    if len(ids) < length:
        start = 105 if cfg.vocab_size > 105 + length else 0  # past lmkit's special tokens when possible
        ids += [start + (7 * i + 3) % (cfg.vocab_size - start) for i in range(length - len(ids))]
    return ids[:length]


def lmkit_greedy(model: nn.Module, cfg: ModelConfig, ids: list[int], steps: int, eos: int, start: int = 0) -> list[int]:
    """Greedy tokens of an lmkit ``model`` by its forward pass (the whole sequence each step), for parity checks.

    Decoder: the tokens after the prompt ``ids`` (stopping when the context window is full).
    Encdec: the decoder tokens after ``start`` for the input ``ids``. At most ``steps`` tokens;
    with ``eos`` >= 0, stops after producing it.
    """
    import torch

    from lmkit.models.registry import spec_of

    decodes = spec_of(cfg.family).decodes
    if decodes == "none":
        raise ValueError("greedy decoding needs a decoder or an encoder-decoder")
    x = torch.tensor([ids])  # (1, T)
    out: list[int] = []
    n_max = min(steps, cfg.max_seq_len - len(ids)) if decodes == "causal" else steps  # causal: one window
    with torch.no_grad():
        for _ in range(max(0, n_max)):
            if decodes == "causal":
                logits = model(torch.tensor([[*ids, *out]]))  # (1, T + n, V)
            else:
                logits = model(x, torch.tensor([[start, *out]]))  # (1, 1 + n, V)
            out.append(int(logits[0, -1].argmax()))
            if eos >= 0 and out[-1] == eos:
                break
    return out


def verify_export(
    model: nn.Module, cfg: ModelConfig, folder: Path, tok: Tokenizer | None, steps: int = 8
) -> dict[str, Any]:
    """Load ``folder`` with transformers and compare logits and greedy output with lmkit's ``model``."""
    import torch
    import transformers

    from lmkit.models.registry import spec_of

    decodes = spec_of(cfg.family).decodes
    target = target_of(cfg)
    auto = getattr(transformers, target.auto_class)
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # e.g. T5's notice about untied heads
    transformers.logging.disable_progress_bar()  # its "Loading weights" bar is noise in lmkit's output
    try:
        hf = auto.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as e:  # anything transformers raises means the folder is not loadable
        raise LmkitError(
            f"{folder}: transformers cannot load the export ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    loaded = type(hf).__name__
    if loaded != target.architecture:
        raise LmkitError(f"{folder}: {target.auto_class} built {loaded}, expected {target.architecture}")
    ids = probe_ids(cfg, tok)
    x = torch.tensor([ids])
    eos = tok.eos_id if tok is not None and tok.eos_id >= 0 else -1
    start = tok.decoder_start_id if tok is not None and tok.decoder_start_id >= 0 else -1
    if start < 0 and decodes == "seq2seq":  # no tokenizer: the class's own start (T5 <pad> 0, BART </s> 2)
        start = int(adapter_or_error(cfg).config_to_hf(cfg).get("decoder_start_token_id", 0))
    with torch.no_grad():
        if decodes == "seq2seq":
            y = torch.tensor([[start, *ids[: max(1, len(ids) // 2) - 1]]])
            ours, theirs = model(x, y), hf(input_ids=x, decoder_input_ids=y).logits
        else:
            ours, theirs = model(x), hf(input_ids=x).logits
    diff = float((ours - theirs).abs().max())
    tol = PARITY_RTOL * max(1.0, float(ours.abs().max()))
    report: dict[str, Any] = {
        "loaded_class": loaded,
        "probe_tokens": len(ids),
        "max_abs_diff": diff,
        "max_abs_logit": float(ours.abs().max()),
        "tolerance": tol,
    }
    if decodes == "none":
        report["greedy_match"] = bool(torch.equal(ours.argmax(-1), theirs.argmax(-1)))
        report["greedy_what"] = "top-1 prediction at every position"
    else:
        prompt = ids[: max(1, min(len(ids), cfg.max_seq_len - steps))] if decodes == "causal" else ids
        mine = lmkit_greedy(model, cfg, prompt, steps, eos, start)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": len(mine) if eos < 0 else steps, "do_sample": False}
        if eos < 0:
            gen_kwargs["eos_token_id"] = None
        with torch.no_grad():
            seq = hf.generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), **gen_kwargs
            )[0].tolist()
        theirs_gen = seq[len(prompt) :] if decodes == "causal" else seq[1:]
        report["greedy_match"] = theirs_gen == mine
        report["greedy_tokens"] = len(mine)
        report["greedy_what"] = f"{len(mine)} greedy tokens"
    report["ok"] = diff <= tol and report["greedy_match"]
    return report
