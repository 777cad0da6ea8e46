"""Rotary settings of a transformers config.json ⇄ lmkit's ``rope_theta``, ``rotary_fraction`` and
``rope_scaling``, shared by the rotary adapters (Llama, Qwen2, GPT-NeoX).

Both spellings are read: transformers 4.x writes ``rope_theta`` at the top level and ``rope_scaling``
(``null`` or ``{"rope_type"|"type": ..., "factor": ...}``); 5.x writes one ``rope_parameters``
mapping holding ``rope_type``, ``rope_theta`` (and ``partial_rotary_factor``). As in transformers, a
non-empty ``rope_scaling`` wins over ``rope_parameters``, and a theta inside the mapping wins over the
top-level one. Rope types other than default, linear and llama3 (dynamic, yarn, longrope, ...) are
refused naming the key and the type. Export writes the 4.x spelling, which both versions read.
"""

from __future__ import annotations

from typing import Any

from lmkit.model_variants import RopeScaling
from lmkit.models.hf_adapters.base import HFConfigReader


def read_rope(
    r: HFConfigReader,
    default_theta: float = 10000.0,
    theta_key: str = "rope_theta",
    fraction_key: str = "partial_rotary_factor",
    default_fraction: float = 1.0,
) -> tuple[float, float, RopeScaling]:
    """(rope_theta, rotary_fraction, rope_scaling) from the config's rope settings, or one line naming
    the setting lmkit cannot represent. ``theta_key``/``fraction_key``: the class's own top-level names
    (GPT-NeoX: ``rotary_emb_base``, ``rotary_pct``)."""
    hf = r.hf
    scaling_given = bool(hf.get("rope_scaling"))
    key = "rope_scaling" if scaling_given else "rope_parameters"
    for k in ("rope_scaling", "rope_parameters"):
        r.need(hf.get(k) is None or isinstance(hf.get(k), dict), f"{k} must be a mapping, got {hf.get(k)!r}")
    params: dict[str, Any] = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
    if isinstance(params.get("full_attention"), dict):  # 5.x nested per layer type: one kind of layer only
        r.need(set(params) == {"full_attention"}, f"{key} differs per layer type ({sorted(params)})")
        params = params["full_attention"]
    theta = params.get("rope_theta", hf.get(theta_key, hf.get("rope_theta", default_theta)))
    r.need(
        isinstance(theta, (int, float)) and not isinstance(theta, bool) and theta > 0,
        f"rope_theta must be a positive number, got {theta!r}",
    )
    fraction = params.get("partial_rotary_factor", hf.get(fraction_key, hf.get("partial_rotary_factor")))
    fraction = default_fraction if fraction is None else fraction
    r.need(
        isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction <= 1,
        f"{fraction_key} must be in (0, 1], got {fraction!r}",
    )
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return float(theta), float(fraction), RopeScaling()

    def num(name: str, default: float | None = None) -> float:
        v = params.get(name, default)
        r.need(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
            f"{key}.{name} must be a positive number, got {v!r}",
        )
        return float(v)  # type: ignore[arg-type]

    if rope_type == "linear":
        return float(theta), float(fraction), RopeScaling("linear", factor=num("factor"))
    if rope_type == "llama3":
        original = params.get("original_max_position_embeddings", hf.get("max_position_embeddings"))
        r.need(
            isinstance(original, int) and not isinstance(original, bool) and original > 0,
            f"{key}.original_max_position_embeddings must be a positive integer, got {original!r}",
        )
        scaling = RopeScaling(
            "llama3",
            factor=num("factor"),
            low_freq_factor=num("low_freq_factor"),
            high_freq_factor=num("high_freq_factor"),
            original_max_len=int(original),  # type: ignore[arg-type]
        )
        return float(theta), float(fraction), scaling
    raise r.fail(
        f"{key}.rope_type {rope_type!r} has no lmkit equivalent (lmkit computes the default, linear and llama3 "
        "rotary frequencies)"
    )


def write_rope(theta: float, scaling: RopeScaling) -> dict[str, Any]:
    """The 4.x spelling of rope settings: ``rope_theta`` and ``rope_scaling`` (null when unscaled)."""
    out: dict[str, Any] = {"rope_theta": theta, "rope_scaling": None}
    if scaling.type == "linear":
        out["rope_scaling"] = {"rope_type": "linear", "type": "linear", "factor": scaling.factor}
    elif scaling.type == "llama3":
        out["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": scaling.factor,
            "low_freq_factor": scaling.low_freq_factor,
            "high_freq_factor": scaling.high_freq_factor,
            "original_max_position_embeddings": scaling.original_max_len,
        }
    return out


__all__ = ["read_rope", "write_rope"]
