"""From a transformers ``config.json`` to lmkit's ModelConfig: exactly, or refused naming why.

:func:`lmkit_config_from_hf` finds the class's adapter (``lmkit.models.hf.adapter_for_hf``: from
``architectures``, else ``model_type``) and returns the lmkit config that computes the same function,
or one :class:`~lmkit.errors.LmkitError` naming the file, the config key and its value that lmkit has
no equivalent for (an active sliding window, mixture of experts, q/k norms, another rope scaling
type, ...). Nothing is approximated: a setting that would change the model's outputs is refused,
not dropped. Each class's rules are its adapter's (``lmkit.models.hf_adapters.<class>``).

:func:`original_config` is the way back for lmkit's own exports: the exported checkpoint's
ModelConfig (kept in ``lmkit_meta.json``) when it agrees with the one derived here, so fields
transformers has no slot for come back exactly. The weights themselves are
:mod:`lmkit.ship.import_hf`'s.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.models.hf import adapter_for_hf

if TYPE_CHECKING:
    from lmkit.config import ModelConfig


def lmkit_config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    """The lmkit ModelConfig equal to transformers config ``hf``, or an error naming what has no equivalent."""
    return adapter_for_hf(hf, source).config_from_hf(hf, source, max_seq_len, tokenizer_max_len)


# Fields that must agree for an export's own ModelConfig to stand in for the derived one.
_SAME = (
    "family",
    "vocab_size",
    "d_model",
    "n_layers",
    "n_heads",
    "ffn_width",
    "tie_embeddings",
    "norm_eps",
    "kv_heads",
    "head_dim",
    "norm",
    "bias",
    "mlp",
    "activation",
    "residual",
    "rotary_fraction",
    "rope_scaling",
    "embed_norm",
    "type_vocab_size",
)


def original_config(record: dict[str, Any], derived: ModelConfig, max_seq_len: int | None) -> ModelConfig:
    """The exported checkpoint's own ModelConfig when it agrees with the transformers config.

    Fields transformers has no slot for (encdec's context and target lengths, its unused position
    setting) then come back exactly as they were; any disagreement keeps the derived config.
    """
    from lmkit.config import model_config_from_dict

    try:
        orig = model_config_from_dict(record.get("lmkit_model") or {})
    except LmkitError:
        return derived
    if any(getattr(orig, k) != getattr(derived, k) for k in _SAME):
        return derived
    if (orig.n_decoder_layers or orig.n_layers) != (derived.n_decoder_layers or derived.n_layers):
        return derived
    if orig.family == "decoder" and (orig.pos_encoding, orig.rope_theta) != (derived.pos_encoding, derived.rope_theta):
        return derived
    if orig.family == "encoder" and (
        orig.pos_encoding != derived.pos_encoding
        or orig.rope_theta != derived.rope_theta
        or orig.max_seq_len < derived.max_seq_len
    ):
        return derived
    return dataclasses.replace(orig, max_seq_len=max_seq_len) if max_seq_len else orig


__all__ = ["lmkit_config_from_hf", "original_config"]
