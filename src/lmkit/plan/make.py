"""The plan: everything ``lmkit plan`` reports, as one JSON-ready dict (``make_plan``), from a model
(a parameter count or a config) and/or tokens and/or a compute budget.

Only arithmetic over ``lmkit.plan``'s modules; it measures this machine (``lmkit.plan.measure``)
only when asked for ``gpu="here"``. Printing lives in ``lmkit.cli.plan``.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from lmkit.config import ModelConfig, TrainConfig
from lmkit.errors import LmkitError
from lmkit.plan.chinchilla import (
    ABOUT_RIGHT_BAND,
    TOKENS_PER_PARAM,
    ScalingFit,
    get_fit,
    rule_optimal,
    shape_for_params,
    verdict,
)
from lmkit.plan.compute import (
    ACCELERATORS,
    DEFAULT_MFU,
    MAX_FLOPS,
    MAX_MICRO_BATCH,
    MAX_PARAMS,
    MAX_SEQ_LEN,
    MAX_TOKENS,
    PF_DAY,
    THIS_MACHINE,
    ParamCount,
    check_utilisation,
    count_params,
    flops_per_token,
    gpu_hours,
    pf_days,
    training_flops,
)
from lmkit.plan.fits_memory import MAX_DEVICES, memory_verdict
from lmkit.plan.measure import HERE_WORDS, measure_matmul_peak
from lmkit.plan.memory import (
    FINISH_BASELINE_BYTES,
    SHARDINGS,
    inference_memory,
    korthikanti_activation_bytes,
    runtime_of,
    training_memory,
    training_rule_of_thumb_bytes,
    weights_bytes,
)

ACTIVATION_ASSUMPTIONS = {
    "activations": "lmkit's model as it trains: fused attention (scaled_dot_product_attention keeps q, k, v, "
    "its output and a log-sum-exp per row, never the T x T scores), fp32 residual stream under "
    "autocast, SwiGLU MLP",
    "korthikanti_activation_bytes": "Korthikanti et al. 2022's GPT without fused attention: "
    "s*b*h*(34 + 5*a*s/h) bytes per layer at 16 bits, the 5*a*s/h term being the "
    "attention scores, softmax and dropout mask kept for the backward pass",
    "korthikanti_fused_attention_activation_bytes": "the same formula with fused attention (the 5*a*s/h term "
    "dropped): s*b*h*34 bytes per layer",
}


def tokens_of_run(train: TrainConfig, params: float, seq_len: int, per_token_flops: float) -> float | None:
    """Tokens a run config will train on: the first of its stop conditions (time aside)."""
    per_step = train.batch_size * seq_len
    limits = []
    if train.max_steps is not None:
        limits.append(train.max_steps * per_step)
    if train.max_tokens is not None:
        limits.append(math.ceil(train.max_tokens / per_step) * per_step)
    if train.max_flops is not None:
        limits.append(math.ceil(train.max_flops / per_token_flops / per_step) * per_step)
    if train.tokens_per_param is not None:
        limits.append(math.ceil(train.tokens_per_param * params / per_step) * per_step)
    return float(min(limits)) if limits else None


def _check_range(flag: str, value: float, lo: float, hi: float, unit: str = "") -> None:
    """One line when ``value`` of ``flag`` is outside [lo, hi]: the range lmkit plans (see
    ``lmkit.plan.compute.MAX_PARAMS``), inside which every figure of the plan is a finite number."""
    if not (lo <= value <= hi):  # NaN included

        def say(v: float) -> str:
            return f"{v:,}" if isinstance(v, int) else f"{v:.3g}"

        raise LmkitError(f"{flag} must be {say(lo)} to {say(hi)}{' ' + unit if unit else ''}, got {say(value)}")


def make_plan(
    *,
    params: float | None = None,
    tokens: float | None = None,
    cfg: ModelConfig | None = None,
    train: TrainConfig | None = None,
    flops: float | None = None,
    budget_pf_days: float | None = None,
    budget_gpu_hours: float | None = None,
    gpu: str = "A100",
    n_gpus: int = 1,
    seq_len: int | None = None,
    micro_batch: int | None = None,
    sharding: str = "ddp",
    precision: str | None = None,
    checkpointing: bool | None = None,
    scaling_law: str | ScalingFit = "chinchilla",
    utilisation: float = DEFAULT_MFU,
    this_machine_peak: float | None = None,
    source: str | None = None,
    runtime_bytes: float | None = None,
    heap: str | None = None,
    finish_bytes: float | None = None,
) -> dict[str, Any]:
    """Everything ``lmkit plan`` reports, as one JSON-ready dict.

    Give a model (``params`` or ``cfg``) and/or tokens and/or a budget (``flops``,
    ``budget_pf_days`` or ``budget_gpu_hours`` on ``gpu``). Missing pieces are derived: with a
    budget and no model, the rule's compute-optimal size; with a model and no tokens, the run
    config's stop conditions or else 20 tokens per parameter; with a budget and a model, the tokens
    it affords. ``scaling_law``: the parametric loss law, a name in ``lmkit.plan.chinchilla.FITS``
    (``--fit``) or a ScalingFit the user fitted (``--scaling-law``); a fitted law replaces the
    20-tokens rule in all of these and in the verdict. The memory verdict for ``gpu`` is
    ``memory.on_device`` (``lmkit.plan.fits_memory.memory_verdict``). ``runtime_bytes``: the runtime's
    own resident memory while it trains, and ``finish_bytes``: what the end of a run adds (this
    machine's measured baseline for the model's family, see ``lmkit.plan.baseline``); lmkit's
    defaults when None. The optimizer's states are ``train.optimizer``'s (AdamW without a run
    config). ``heap``: for a run on this machine's CPU, its settled ``train.memory`` (fast | lean:
    what the allocator keeps beside the tensors, ``lmkit.plan.memory.heap_bytes``); None for a
    GPU's memory.
    """
    f = get_fit(scaling_law)
    own_law = isinstance(scaling_law, ScalingFit)  # --scaling-law: the user's law sizes a budget, not the 20 rule
    finish = FINISH_BASELINE_BYTES if finish_bytes is None else float(finish_bytes)
    if sharding not in SHARDINGS:
        raise LmkitError(f"--sharding must be one of {'|'.join(SHARDINGS)}, got {sharding!r}")
    _check_range("--gpus", n_gpus, 1, MAX_DEVICES, "devices")
    for flag, count, hi in (("--seq-len", seq_len, MAX_SEQ_LEN), ("--micro-batch", micro_batch, MAX_MICRO_BATCH)):
        if count is not None:  # None: the config's; 0 is not "the default"
            _check_range(flag, count, 1, hi)
    for name, amount, most in (
        ("--params", params, MAX_PARAMS),
        ("--tokens", tokens, MAX_TOKENS),
        ("--flops", flops, MAX_FLOPS),
    ):
        if amount is not None:
            _check_range(name, amount, 1.0, most)
    check_utilisation(utilisation)
    peak_of = dict(ACCELERATORS)
    if this_machine_peak:
        peak_of[THIS_MACHINE] = float(this_machine_peak)
    gpu_key = next((k for k in peak_of if k.lower() == gpu.strip().lower()), None)
    if gpu_key is None:
        if gpu.strip().lower() in HERE_WORDS:
            peak_of[THIS_MACHINE] = peak_of.get(THIS_MACHINE) or measure_matmul_peak()
            gpu_key = THIS_MACHINE
        else:
            raise LmkitError(f"--gpu must be one of {', '.join(ACCELERATORS)} or here, got {gpu!r}")
    budgets = [b for b in (flops, budget_pf_days, budget_gpu_hours) if b is not None]
    if len(budgets) > 1:
        raise LmkitError("give one budget: --flops, --pf-days or --gpu-hours")
    budget: float | None = None
    if flops is not None:
        budget = float(flops)
    elif budget_pf_days is not None:
        _check_range("--pf-days", budget_pf_days, 1 / PF_DAY, MAX_FLOPS / PF_DAY, f"(1 to {MAX_FLOPS:g} FLOPs)")
        budget = float(budget_pf_days) * PF_DAY
    elif budget_gpu_hours is not None:
        per_hour = 3600.0 * peak_of[gpu_key] * utilisation
        _check_range(
            "--gpu-hours",
            budget_gpu_hours,
            1 / per_hour,
            MAX_FLOPS / per_hour,
            f"({gpu_key}-hours at {utilisation:.0%} utilisation: 1 to {MAX_FLOPS:g} FLOPs)",
        )
        budget = float(budget_gpu_hours) * per_hour
    if params is not None and cfg is not None:
        raise LmkitError("give either --params or --config, not both")
    if budget is not None and (params is not None or cfg is not None) and tokens is not None:
        raise LmkitError("a budget, a model and --tokens over-determine the plan: drop one of them")

    notes: list[str] = []
    n_exact: ParamCount | None = count_params(cfg) if cfg is not None else None
    if n_exact is not None:
        n_params: float | None = float(n_exact.total)
        params_source = "config"
    elif params is not None:
        n_params, params_source = float(params), "--params"
    else:
        n_params, params_source = None, ""
    if n_params is None:
        if budget is not None and tokens is not None:
            n_params, params_source = budget / (6.0 * tokens), "budget / (6 · tokens)"
        elif budget is not None and own_law:
            n_params, params_source = f.optimal(budget)[0], f"compute-optimal for the budget under {f.name}"
        elif budget is not None:
            n_params, params_source = rule_optimal(budget)[0], "compute-optimal for the budget (20 tokens/parameter)"
        elif tokens is not None and own_law:
            n_params, params_source = f.optimal_params(tokens), f"compute-optimal for these tokens under {f.name}"
        elif tokens is not None:
            n_params, params_source = tokens / TOKENS_PER_PARAM, "tokens / 20 (compute-optimal for these tokens)"
        else:
            raise LmkitError(
                "nothing to plan: give --params, --config, --tokens or a budget (--flops, --pf-days, "
                "--gpu-hours); --known-models lists well-known models"
            )
    shape = cfg if cfg is not None else shape_for_params(n_params, seq_len=seq_len or 2048)
    runtime = runtime_of(shape, runtime_bytes)
    if cfg is None:
        notes.append(
            f"no --config: memory assumes a Llama-like shape of this size (d_model {shape.d_model}, "
            f"{shape.n_layers} layers, {shape.n_heads} heads, vocab {shape.vocab_size}); pass --config "
            "for exact figures"
        )
    S = int(seq_len or (cfg.max_seq_len if cfg is not None else 2048))
    per_tok = (
        flops_per_token(shape, S) if cfg is not None else 6.0 * n_params + 12.0 * shape.n_layers * shape.d_model * S
    )

    if tokens is not None:
        n_tokens, tokens_source = float(tokens), "--tokens"
    elif budget is not None and params_source in ("config", "--params"):
        n_tokens, tokens_source = budget / (6.0 * n_params), "budget / (6 · params)"
    elif budget is not None:
        n_tokens, tokens_source = budget / (6.0 * n_params), params_source
    else:
        run_tokens = tokens_of_run(train, n_params, S, per_tok) if train is not None else None
        if run_tokens is not None:
            n_tokens, tokens_source = run_tokens, "the run config's stop conditions"
        elif own_law:
            n_tokens, tokens_source = f.optimal_tokens(n_params), f"compute-optimal for this size under {f.name}"
        else:
            n_tokens, tokens_source = TOKENS_PER_PARAM * n_params, "20 tokens per parameter (Chinchilla's rule)"
    flops_6nd = training_flops(n_params, n_tokens)
    total_flops = budget if budget is not None else per_tok * n_tokens

    mb = int(micro_batch or ((train.micro_batch_size or train.batch_size) if train is not None else 1))
    prec = precision or (train.precision if train is not None else ("fp32" if cfg is not None else "bf16"))
    prec = "bf16" if prec == "auto" else prec  # a run's auto as on a GPU; lmkit plan settles it for this machine
    ckpt = bool(checkpointing if checkpointing is not None else (train.activation_checkpointing if train else False))
    opt = train.optimizer if train is not None else "adamw"
    mem_train = training_memory(shape, n_params, mb, S, prec, sharding, n_gpus, ckpt, runtime, finish, opt, heap)
    weight_fmt = "fp32" if prec == "fp32" else prec
    mem_inf = inference_memory(shape, n_params, mb, S, weight_fmt, runtime_bytes=runtime)
    on_device = memory_verdict(
        shape,
        n_params,
        gpu_key,
        micro_batch=mb,
        seq_len=S,
        precision=prec,
        sharding=sharding,
        n_gpus=n_gpus,
        checkpointing=ckpt,
        runtime_bytes=runtime,
        finish_bytes=finish,
        optimizer=opt,
    )
    gpu_table = {k: gpu_hours(total_flops, p, utilisation) for k, p in peak_of.items()}

    chin_budget = budget if budget is not None else flops_6nd
    rule_n, rule_d = rule_optimal(chin_budget)
    fit_n, fit_d = f.optimal(chin_budget)
    optimal_ratio = fit_d / fit_n if own_law else TOKENS_PER_PARAM  # what the verdict measures against
    return _finite(
        {
            "source": source,
            "family": shape.family if cfg is not None else None,
            "params": n_params,
            "params_source": params_source,
            "params_breakdown": asdict(n_exact) if n_exact is not None else None,
            "tokens": n_tokens,
            "tokens_source": tokens_source,
            "tokens_per_param": n_tokens / n_params,
            "verdict": verdict(n_params, n_tokens, optimal_ratio),
            "verdict_optimal_tokens_per_param": optimal_ratio,
            "seq_len": S,
            "micro_batch": mb,
            "flops_per_token": per_tok,
            "flops": total_flops,
            "flops_6nd": flops_6nd,
            "pf_days": pf_days(total_flops),
            "compute": {
                "utilisation": utilisation,
                "peak_flops": peak_of,
                "gpu_hours": gpu_table,
                "gpus": n_gpus,
                "wall_hours": {k: v / n_gpus for k, v in gpu_table.items()},
                "gpu": gpu_key,
            },
            "memory": {
                "weights_bytes": weights_bytes(n_params),
                "training_rule_of_thumb_bytes": training_rule_of_thumb_bytes(n_params),
                "training_bytes": mem_train["total"],
                "training_breakdown": mem_train,
                "training_settings": {
                    "precision": prec,
                    "sharding": sharding,
                    "gpus": n_gpus,
                    "micro_batch": mb,
                    "seq_len": S,
                    "activation_checkpointing": ckpt,
                    "optimizer": opt,
                },
                "korthikanti_activation_bytes": korthikanti_activation_bytes(
                    S, mb, shape.d_model, shape.n_heads, shape.n_layers, ckpt
                ),
                "korthikanti_fused_attention_activation_bytes": korthikanti_activation_bytes(
                    S, mb, shape.d_model, shape.n_heads, shape.n_layers, ckpt, fused_attention=True
                ),
                "activation_assumptions": ACTIVATION_ASSUMPTIONS,
                "on_device": on_device,
                "inference_bytes": mem_inf["total"],
                "inference_breakdown": mem_inf,
                "inference_settings": {"weights": weight_fmt, "batch": mb, "context": S},
                "assumed_shape": None
                if cfg is not None
                else {
                    "d_model": shape.d_model,
                    "n_layers": shape.n_layers,
                    "n_heads": shape.n_heads,
                    "vocab_size": shape.vocab_size,
                },
            },
            "chinchilla": {
                "budget_flops": chin_budget,
                "rule": {"params": rule_n, "tokens": rule_d, "tokens_per_param": TOKENS_PER_PARAM},
                "fit": {
                    "name": f.name,
                    "source": f.source,
                    "params": fit_n,
                    "tokens": fit_d,
                    "loss": f.loss(fit_n, fit_d),
                    "tokens_per_param": fit_d / fit_n,
                    "loss_of_plan": f.loss(n_params, n_tokens),
                    "optimal_tokens_for_params": f.optimal_tokens(n_params),
                    "coefficients": {"E": f.E, "A": f.A, "B": f.B, "alpha": f.alpha, "beta": f.beta},
                },
                "rule_tokens_for_params": TOKENS_PER_PARAM * n_params,
                "about_right_band_tokens_per_param": [b / TOKENS_PER_PARAM * optimal_ratio for b in ABOUT_RIGHT_BAND],
            },
            "notes": notes,
        }
    )


def _finite(plan: dict[str, Any]) -> dict[str, Any]:
    """``plan`` when every number in it is finite, else one line naming the first that is not: the
    inputs' ranges keep them finite, and this last guard keeps a NaN or inf out of any plan."""
    bad = _first_non_finite(plan)
    if bad is not None:
        raise LmkitError(f"the plan's {bad} is not a finite number: an input is out of the range lmkit plans")
    return plan


def _first_non_finite(obj: Any, name: str = "") -> str | None:
    if isinstance(obj, float):
        return None if math.isfinite(obj) else name
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        bad = _first_non_finite(value, f"{name}.{key}" if name else str(key))
        if bad is not None:
            return bad
    return None


__all__ = ["ACTIVATION_ASSUMPTIONS", "make_plan", "tokens_of_run"]
