"""Compute planning, as pure functions: parameters, memory, FLOPs, PF-days, GPU-hours, Chinchilla.

Every figure lmkit prints about cost comes from here, so the trainer's MFU, the demo's plan and
``lmkit plan`` agree. One module per concern:

- ``compute``: parameter counts, FLOPs per token, 6·N·D, PF-days, MFU, device-hours, datasheet peaks
- ``memory``: weights, model states under sharding, activations, training and inference peaks, KV cache
- ``fits_memory``: the accelerators' memory; does a run fit in it, and what makes it fit (the memory
  verdict; "fit" alone means a scaling-law fit, as in ``chinchilla``)
- ``chinchilla``: the 20-tokens-per-parameter rule, the loss fits, verdicts, well-known models
- ``spans``: span corruption's token counts (shared with ``lmkit.objectives``)
- ``units``: ``parse_count`` (``1.5B`` -> 1.5e9), lmkit's one count parser
- ``make``: ``make_plan``, everything ``lmkit plan`` reports as one dict
- ``measure``: this machine's measured matmul peak (not maths; torch imported only when measuring)

These import nothing from lmkit except ``lmkit.config``, ``lmkit.errors`` and each other; the
printing of ``lmkit plan`` lives in ``lmkit.cli.plan``. This package re-exports the public names.
"""

from __future__ import annotations

from lmkit.plan.chinchilla import (
    ABOUT_RIGHT_BAND,
    FITS,
    KNOWN_MODELS,
    TOKENS_PER_PARAM,
    KnownModel,
    ScalingFit,
    get_fit,
    known_models_table,
    rule_optimal,
    shape_for_params,
    verdict,
)
from lmkit.plan.compute import (
    ACCELERATORS,
    DEFAULT_MFU,
    MLM_SCORED_FRACTION,
    PF_DAY,
    T5_RELATIVE_BUCKETS,
    THIS_MACHINE,
    ParamCount,
    count_params,
    decoded_target_len,
    flops_per_token,
    gpu_hours,
    mfu,
    pf_days,
    training_flops,
)
from lmkit.plan.make import make_plan, tokens_of_run
from lmkit.plan.measure import accelerator_peak, device_peak_flops, measure_matmul_peak
from lmkit.plan.memory import (
    DTYPE_BYTES,
    LOSS_CHUNK,
    PRECISIONS,
    RULE_OF_THUMB_EXTRA_BYTES,
    SHARDINGS,
    activation_bytes,
    inference_memory,
    korthikanti_activation_bytes,
    kv_cache_bytes,
    model_state_bytes,
    training_memory,
    training_rule_of_thumb_bytes,
    weights_bytes,
)
from lmkit.plan.units import parse_count

__all__ = [
    "ABOUT_RIGHT_BAND",
    "ACCELERATORS",
    "DEFAULT_MFU",
    "DTYPE_BYTES",
    "FITS",
    "KNOWN_MODELS",
    "LOSS_CHUNK",
    "MLM_SCORED_FRACTION",
    "PF_DAY",
    "PRECISIONS",
    "RULE_OF_THUMB_EXTRA_BYTES",
    "SHARDINGS",
    "T5_RELATIVE_BUCKETS",
    "THIS_MACHINE",
    "TOKENS_PER_PARAM",
    "KnownModel",
    "ParamCount",
    "ScalingFit",
    "accelerator_peak",
    "activation_bytes",
    "count_params",
    "decoded_target_len",
    "device_peak_flops",
    "flops_per_token",
    "get_fit",
    "gpu_hours",
    "inference_memory",
    "known_models_table",
    "korthikanti_activation_bytes",
    "kv_cache_bytes",
    "make_plan",
    "measure_matmul_peak",
    "mfu",
    "model_state_bytes",
    "parse_count",
    "pf_days",
    "rule_optimal",
    "shape_for_params",
    "tokens_of_run",
    "training_flops",
    "training_memory",
    "training_rule_of_thumb_bytes",
    "verdict",
    "weights_bytes",
]
