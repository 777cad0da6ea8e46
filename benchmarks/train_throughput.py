"""Training throughput: lmkit's models against the matching Hugging Face `transformers` classes.

One training step = forward, loss, backward, gradient clipping, AdamW update, on the same batch
size, sequence length and parameter count, in one process with the two sides' steps interleaved
(so machine noise hits both alike). Prints tokens/s medians, their ratio lmkit / HF, the median
and quartiles of the ratio within each round (one step of each side back to back), and lmkit's
model FLOPs utilisation against this machine's measured matmul peak.

``--precision`` runs each table in fp32 and/or in the precision ``train.precision: auto`` picks on
this machine (its cached bf16-vs-fp32 probe, ``lmkit.plan.measure.auto_precision``); both sides run
their forward pass and loss under the same ``torch.autocast`` for bf16. Where auto picks fp32, the
fp32 table is the chosen precision's too, and it is said so rather than timed twice.

    python benchmarks/train_throughput.py [--family decoder encoder encdec] [--steps 30] [--precision fp32 auto]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from lmkit.config import ModelConfig
from lmkit.models import build_model
from lmkit.objectives import SpecialIds, make_batch, window_length
from lmkit.plan import flops_per_token, measure_matmul_peak

VOCAB, D, LAYERS, HEADS, SEQ, BATCH = 8192, 256, 4, 4, 256, 16
# bf16: both sides' forward pass and loss run under CPU autocast (set by main)
PRECISION: dict[str, torch.dtype | None] = {"dtype": None}


def _autocast() -> contextlib.AbstractContextManager[Any]:
    dtype = PRECISION["dtype"]
    return torch.autocast("cpu", dtype) if dtype is not None else contextlib.nullcontext()


def _hf_decoder(cfg: ModelConfig) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=D,
            intermediate_size=cfg.ffn_width,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=HEADS,
            max_position_embeddings=SEQ,
            tie_word_embeddings=True,
            attn_implementation="sdpa",
        )
    )


def _step_fn(
    model: torch.nn.Module, loss_fn: Callable[[Any], torch.Tensor], optimizer: torch.optim.Optimizer
) -> Callable[[Any], float]:
    def step(ids: Any) -> float:
        with _autocast():  # as the trainer does: forward and loss under autocast, backward outside
            loss = loss_fn(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def _lmkit_step(
    model: torch.nn.Module, loss_fn: Callable[[Any], torch.Tensor], compile: bool
) -> Callable[[Any], float]:
    """lmkit's training step as ``lmkit pretrain`` runs it: its AdamW, and with ``compile`` the loss
    module compiled as ``train.compile: true`` does (the first steps pay for compilation)."""
    from lmkit.train.steps import make_optimizer

    if compile:
        loss_fn = torch.compile(loss_fn)
    return _step_fn(model, loss_fn, make_optimizer(model, lr=3e-4, weight_decay=0.1))


def bench_decoder(steps: int, warmup: int, compile: bool = False) -> dict[str, float]:
    """Causal-LM training step: lmkit's decoder vs LlamaForCausalLM (same weights layout and size)."""
    from lmkit.train.distributed import LossModule

    torch.manual_seed(0)
    cfg = ModelConfig(family="decoder", vocab_size=VOCAB, d_model=D, n_layers=LAYERS, n_heads=HEADS, max_seq_len=SEQ)
    model = build_model(cfg)
    hf = _hf_decoder(cfg)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ + 1))
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    lm_step = _lmkit_step(model, LossModule(model), compile)
    # HF shifts the labels itself: it scores input position t against input token t+1
    hf_step = _step_fn(
        hf,
        lambda b: hf(input_ids=b["input_ids"], labels=b["input_ids"]).loss,
        torch.optim.AdamW(hf.parameters(), lr=3e-4, weight_decay=0.1),
    )
    times = _interleaved_times(lm_step, hf_step, batch, steps, warmup)
    return _report("decoder", "LlamaForCausalLM", cfg, model, hf, times, BATCH * SEQ, " (compiled)" if compile else "")


def _interleaved_times(
    lm_step: Callable[[Any], float], hf_step: Callable[[Any], float], batch: Any, steps: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per step of each side, the two alternating who goes first."""
    times: dict[str, list[float]] = {"lmkit": [], "hf": []}
    for i in range(warmup + steps):
        for name, step in (
            (("lmkit", lm_step), ("hf", hf_step)) if i % 2 == 0 else (("hf", hf_step), ("lmkit", lm_step))
        ):
            t0 = time.perf_counter()
            step(batch)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def _report(
    family: str,
    hf_name: str,
    cfg: ModelConfig,
    model: torch.nn.Module,
    hf: torch.nn.Module,
    times: dict[str, list[float]],
    tokens: int,
    note: str = "",
) -> dict[str, float]:
    n_lm = sum(p.numel() for p in model.parameters())
    n_hf = sum(p.numel() for p in hf.parameters() if p.requires_grad)
    emb = cfg.vocab_size * cfg.d_model
    lm_tps = tokens / statistics.median(times["lmkit"])
    hf_tps = tokens / statistics.median(times["hf"])
    # each round runs one step of each side back to back: the ratio within a round is immune to the
    # machine's speed drifting between rounds (this VM's matmul peak moves by 30% within minutes)
    paired = sorted(hf / lm for lm, hf in zip(times["lmkit"], times["hf"]))
    q = len(paired) // 4
    peak = measure_matmul_peak(PRECISION["dtype"])  # fp32's peak, or bf16's under autocast
    mfu = lm_tps * flops_per_token(cfg, SEQ) / peak
    print(f"{family:<8} params lmkit {n_lm:,} / HF {n_hf:,} (non-embedding {n_lm - emb:,} / {n_hf - emb:,})")
    print(
        f"{family:<8} lmkit {lm_tps:8.0f} tok/s   HF {hf_name} {hf_tps:8.0f} tok/s   "
        f"ratio {lm_tps / hf_tps:.2f}x   lmkit MFU {100 * mfu:.0f}% of {peak / 1e9:.0f} GFLOP/s{note}"
    )
    print(
        f"{family:<8} ratio within rounds: median {statistics.median(paired):.2f}x, "
        f"quartiles {paired[q]:.2f}-{paired[-1 - q]:.2f}x over {len(paired)} rounds"
    )
    return {
        "lmkit_tps": lm_tps,
        "hf_tps": hf_tps,
        "ratio": lm_tps / hf_tps,
        "paired_ratio": statistics.median(paired),
        "mfu": mfu,
    }


def _specials() -> SpecialIds:
    """lmkit's tokenizer layout: pad 0, bos 1, eos 2, unk 3, [MASK] 4, <extra_id_0..99> 5..104."""
    return SpecialIds(pad=0, bos=1, eos=2, mask=4, sentinels=tuple(range(5, 105)), vocab_size=VOCAB, n_special=105)


def bench_encoder(steps: int, warmup: int, compile: bool = False) -> dict[str, float]:
    """Masked-LM training step: lmkit's encoder vs BertForMaskedLM (same layout, learned positions)."""
    from transformers import BertConfig, BertForMaskedLM

    from lmkit.models.encoder import hf_config
    from lmkit.train.distributed import LossModule

    torch.manual_seed(0)
    cfg = ModelConfig(
        family="encoder",
        vocab_size=VOCAB,
        d_model=D,
        n_layers=LAYERS,
        n_heads=HEADS,
        max_seq_len=SEQ,
        pos_encoding="learned",
        norm_eps=1e-12,
    )
    model = build_model(cfg)
    fields = hf_config(cfg)
    fields.pop("architectures"), fields.pop("model_type")
    hf = BertForMaskedLM(BertConfig(**fields, attn_implementation="sdpa"))
    batch = make_batch(cfg, torch.randint(105, VOCAB, (BATCH, SEQ)), _specials(), torch.Generator().manual_seed(0))
    lm_step = _lmkit_step(model, LossModule(model), compile)
    hf_step = _step_fn(
        hf,
        lambda b: hf(input_ids=b["input_ids"], labels=b["labels"]).loss,
        torch.optim.AdamW(hf.parameters(), lr=3e-4, weight_decay=0.1),
    )
    times = _interleaved_times(lm_step, hf_step, batch, steps, warmup)
    return _report(
        "encoder",
        "BertForMaskedLM",
        cfg,
        model,
        hf,
        times,
        BATCH * SEQ,
        (" (compiled)" if compile else "")
        + "\n         (lmkit runs the MLM head only at the ~15% scored positions, HF at all of them)",
    )


def bench_encdec(steps: int, warmup: int, compile: bool = False) -> dict[str, float]:
    """Span-corruption training step (input 256, target 64): lmkit's encoder-decoder vs T5ForConditionalGeneration."""
    from transformers import T5Config, T5ForConditionalGeneration

    from lmkit.models.encdec import hf_config
    from lmkit.train.distributed import LossModule

    torch.manual_seed(0)
    cfg = ModelConfig(
        family="encdec",
        vocab_size=VOCAB,
        d_model=D,
        n_layers=LAYERS,
        n_heads=HEADS,
        max_seq_len=SEQ,
        max_target_len=64,
        norm_eps=1e-6,
    )
    model = build_model(cfg)
    fields = hf_config(cfg)
    fields.pop("architectures"), fields.pop("model_type")
    hf = T5ForConditionalGeneration(T5Config(**fields, attn_implementation="sdpa"))
    windows = torch.randint(105, VOCAB, (BATCH, window_length(cfg)))
    batch = make_batch(cfg, windows, _specials(), torch.Generator().manual_seed(0))
    lm_step = _lmkit_step(model, LossModule(model), compile)
    hf_step = _step_fn(hf, lambda b: hf(**b).loss, torch.optim.AdamW(hf.parameters(), lr=3e-4, weight_decay=0.1))
    times = _interleaved_times(lm_step, hf_step, batch, steps, warmup)
    return _report(
        "encdec",
        "T5ForConditionalGeneration",
        cfg,
        model,
        hf,
        times,
        BATCH * SEQ,
        (" (compiled)" if compile else "")
        + f" (tokens = encoder inputs; targets padded to {batch['labels'].shape[1]}, "
        f"{int((batch['labels'] != -100).sum(1).max())} scored: lmkit decodes only those)",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", nargs="+", default=["decoder"], choices=["decoder", "encoder", "encdec"])
    ap.add_argument("--steps", type=int, default=30, help="timed rounds (one step of each side per round)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16", "auto"],
        help="precisions to time, in order (default: fp32). auto: what train.precision: auto picks on this "
        "machine for this batch (bf16 autocast where this CPU's probe measured it at least 1.3x fp32); "
        "where that is fp32, the fp32 table stands for it",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time lmkit's step compiled (train.compile: true); compiling takes a minute or more",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions: list[str] = []
    for name in args.precision:
        if name == "auto":
            from lmkit.plan.measure import auto_precision

            name, why, _ = auto_precision("cpu", BATCH * SEQ, D)
            print(f"precision auto -> {name} ({why})")
        if name not in precisions:
            precisions.append(name)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH} x seq {SEQ}, "
        f"vocab {VOCAB}, d_model {D}, {LAYERS} layers, {HEADS} heads, AdamW"
    )
    benches = {"decoder": bench_decoder, "encoder": bench_encoder, "encdec": bench_encdec}
    for precision in precisions:
        PRECISION["dtype"] = torch.bfloat16 if precision == "bf16" else None
        print(f"--- {precision}" + (" (bf16 autocast, both sides)" if precision == "bf16" else ""))
        for family in args.family:
            benches[family](args.steps, args.warmup)
            if args.compile:
                benches[family](args.steps, args.warmup, compile=True)


if __name__ == "__main__":
    main()
