"""``RobertaForMaskedLM`` (lmkit's encoder with learned positions and one token type): the adapter.

RoBERTa is BERT's layout (post-norm, LayerNorm with bias, exact GELU, biases everywhere) with one
token type, its own names (``roberta.*``; the head ``lm_head.{dense,layer_norm,decoder,bias}``,
mapped by ``lmkit.models.encoder.hf_name_map``) and a storage quirk this module owns: transformers numbers
the positions of real tokens from the padding index + 1 (``pad_token_id`` 1, so from 2), which leaves
the first ``POSITION_OFFSET`` rows of ``position_embeddings`` unread by any real token (514 rows for
512 positions). Import drops those rows, export writes them back as zeros (an ``offset`` rule), so
lmkit's position 0 is RoBERTa's row 2 and the model needs no field for it. Logits agree at every
real token; a padding token's own logits (position 1 in transformers) are not compared, as padding
is never attended to and never scored. ``lm_head.decoder.bias`` is written as a copy of
``lm_head.bias``.
"""

from __future__ import annotations

from typing import Any

from lmkit.config import ModelConfig
from lmkit.families import PIPELINE_TAG
from lmkit.models.hf_adapters.base import HFAdapter, HFConfigReader, HFTarget, Rule, same
from lmkit.models.hf_adapters.bert import encoder_config

TARGET = HFTarget("encoder", "RobertaForMaskedLM", "roberta", "AutoModelForMaskedLM", PIPELINE_TAG["encoder"])
PAD_ID = 1  # RoBERTa's padding index (``<pad>``), from which real positions are counted
POSITION_OFFSET = PAD_ID + 1  # rows of the position table before lmkit's position 0
TABLE = "roberta.embeddings.position_embeddings.weight"


def config_from_hf(
    hf: dict[str, Any], source: str, max_seq_len: int | None = None, tokenizer_max_len: int | None = None
) -> ModelConfig:
    r = HFConfigReader(hf, source)
    r.need(
        hf.get("pad_token_id", PAD_ID) == PAD_ID,
        f"pad_token_id {hf.get('pad_token_id')!r}: lmkit reads RoBERTa's position table from row "
        f"{POSITION_OFFSET} (padding index {PAD_ID} + 1)",
    )
    return encoder_config(hf, source, max_seq_len, False, TARGET.model_type, types=1, position_offset=POSITION_OFFSET)


def rules(cfg: ModelConfig) -> list[Rule]:
    from lmkit.models.encoder import hf_name_map

    out = [same(ours, theirs) for ours, theirs in hf_name_map(cfg).items() if ours != "pos_emb.weight"]
    return [*out, Rule(("pos_emb.weight",), TABLE, "offset", offset=POSITION_OFFSET)]


def layout_problem(cfg: ModelConfig) -> str | None:
    if cfg.family != TARGET.family:
        return "RobertaForMaskedLM is an encoder"
    if cfg.pos_encoding != "learned":
        return f"RobertaForMaskedLM has learned positions, got {cfg.pos_encoding}"
    if cfg.type_vocab_size != 1:
        return f"RobertaForMaskedLM has 1 token type, got model.type_vocab_size {cfg.type_vocab_size}"
    return None


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    from lmkit.models.encoder import hf_config

    out = dict(hf_config(cfg))
    out.update(
        {
            "max_position_embeddings": cfg.max_seq_len + POSITION_OFFSET,
            "pad_token_id": PAD_ID,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "layer_norm_eps": cfg.norm_eps,
        }
    )
    return out


ADAPTER = HFAdapter(
    target=TARGET,
    layout_problem=layout_problem,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    embedding="roberta.embeddings.word_embeddings.weight",
    ignored=(r"roberta\.embeddings\.position_ids", r"roberta\.embeddings\.token_type_ids", r"roberta\.pooler\..*"),
    tied=("lm_head.decoder.weight",),
    copies={"lm_head.decoder.bias": "lm_head.bias"},
)

__all__ = ["ADAPTER", "PAD_ID", "POSITION_OFFSET", "TABLE", "TARGET", "config_from_hf", "config_to_hf", "rules"]
