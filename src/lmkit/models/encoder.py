"""Encoder-only transformer (BERT / RoBERTa family), pre-trained by masked language modeling.

Read top to bottom:
    token ids ─▶ token + position (learned) + token-type embeddings ─▶ LayerNorm ─▶ dropout
              ─▶ n_layers × [x = LN(x + Attention(x)) ; x = LN(x + GELU-MLP(x))]   (post-norm, bidirectional)
              ─▶ MLM head: dense ─▶ GELU ─▶ LayerNorm ─▶ output projection + bias
Every position attends to every other (non-padding) position, left and right: the context is
bidirectional, which is what makes an encoder good at understanding a whole text (classification,
tagging, filling a blank) and unable to generate left to right.

The layout is ``BertForMaskedLM``'s one to one (post-norm, exact GELU, learned absolute positions,
two token types, a biased MLM head whose decoder is the word embedding unless
``model.tie_embeddings`` is off), so ``hf_name_map`` is a
pure renaming. With one token type (``model.type_vocab_size: 1``) it is ``RobertaForMaskedLM``:
the same blocks under RoBERTa's names, whose position table starts two rows later (its positions
count from the padding index + 1; the adapter, ``lmkit.models.hf_adapters.roberta``, cuts and
restores those rows). With ``pos_encoding: rotary`` the same blocks without a position table are
``RoFormerForMaskedLM`` (BERT with rotary positions; ``to_hf_state`` reorders the query/key rows
into RoFormer's interleaved rotation). Rotary positions tend to learn word order faster at small
sizes than learned ones. Sinusoidal positions are accepted but have no ``transformers``
counterpart.

The loss runs the MLM head only on the ~15% of positions the objective chose (labels ≠ -100):
the other 85% are never scored, so their head transform and vocabulary logits are never computed
(``layers.linear_cross_entropy`` then computes the softmax over the vocabulary in chunks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmkit.config import ModelConfig
from lmkit.models.layers import Attention
from lmkit.models.loss import linear_cross_entropy
from lmkit.models.positions import register_position_tables

IGNORE_INDEX = -100


class FeedForward(nn.Module):
    """fc_out(gelu(fc_in(x))), width d_model -> d_ff -> d_model, with biases (BERT)."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff)
        self.fc_out = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


class EncoderBlock(nn.Module):
    """One post-norm block: bidirectional self-attention, then feed-forward; LayerNorm after each sum."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg.d_model, cfg.n_heads, bias=True)
        self.attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = FeedForward(cfg.d_model, cfg.ffn_width)
        self.mlp_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, attn_bias=keep, rope=rope)))  # (B, T, C)
        x = self.mlp_norm(x + self.dropout(self.mlp(x)))
        return x


class MLMHead(nn.Module):
    """BERT's prediction-head transform: dense -> GELU -> LayerNorm, plus the output bias (vocab,)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(h)))


class Encoder(nn.Module):
    """BERT-style masked language model: ``forward(input_ids)`` returns logits at every position."""

    # set by register_position_tables (rope_cos/rope_sin (max_seq_len, hd) only with rotary positions)
    pos_emb: nn.Embedding | None
    pos_table: torch.Tensor | None
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        register_position_tables(self, cfg)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.d_model)  # (types, C)
        self.emb_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.head = MLMHead(cfg)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.activation_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's initialisation: Normal(0, 0.02) matrices and embeddings, zero biases, unit norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.head.bias)

    @property
    def output_weight(self) -> torch.Tensor:
        """The (vocab, d_model) matrix that turns MLM-head states into logits."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Contextual states (B, T, C) of token ids (B, T): the encoder's output, before the MLM head.

        ``attention_mask`` (B, T) is 1 for real tokens and 0 for padding (padding is never attended to).
        """
        T = input_ids.shape[1]
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds the context window of {self.cfg.max_seq_len}")
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb.weight[:T]
        elif self.pos_table is not None:
            x = x + self.pos_table[:T]
        if token_type_ids is None:
            x = x + self.type_emb.weight[0]
        else:
            x = x + self.type_emb(token_type_ids)
        x = self.drop(self.emb_norm(x))
        keep = None
        if attention_mask is not None:
            keep = attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, T): which keys may be seen
        rope = (self.rope_cos[:T], self.rope_sin[:T]) if self.cfg.pos_encoding == "rotary" else None
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, keep, rope, use_reentrant=False)
            else:
                x = block(x, keep, rope)
        return x  # (B, T, C)

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (..., vocab) of encoder states h (..., C) through the MLM head."""
        return F.linear(self.head(h), self.output_weight, self.head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) of the original token at every position of input_ids (B, T)."""
        return self.mlm_logits(self.hidden_states(input_ids, attention_mask, token_type_ids))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked LM loss: mean cross-entropy over the positions whose label is not -100."""
        h = self.hidden_states(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        labels = batch["labels"].flatten()  # (B·T,)
        scored = (labels != IGNORE_INDEX).nonzero().squeeze(1)  # (N,) positions the objective chose
        h = self.head(h.flatten(0, 1).index_select(0, scored))  # (N, C)
        return linear_cross_entropy(h, self.output_weight, labels.index_select(0, scored), bias=self.head.bias)

    def layers_for_sharding(self) -> list[nn.Module]:
        """Blocks that FSDP wraps one by one (parameters gathered per block)."""
        return list(self.blocks)


def hf_architecture(cfg: ModelConfig) -> str:
    """The ``transformers`` class this encoder maps onto: BERT (learned positions, two token types),
    RoBERTa (learned positions, one token type) or RoFormer (rotary, two token types).

    RoFormer is BERT with rotary positions and no position table; sinusoidal positions have no
    counterpart.
    """
    types = {2: "BertForMaskedLM", 1: "RobertaForMaskedLM"}
    if cfg.pos_encoding == "learned" and cfg.type_vocab_size in types:
        return types[cfg.type_vocab_size]
    if cfg.type_vocab_size != 2:
        raise ValueError(
            f"an encoder with {cfg.type_vocab_size} token types and {cfg.pos_encoding} positions has no transformers "
            "equivalent (learned positions with 2 types -> BertForMaskedLM, with 1 -> RobertaForMaskedLM)"
        )
    if cfg.pos_encoding == "learned":
        return "BertForMaskedLM"
    if cfg.pos_encoding == "rotary" and cfg.rope_theta == 10000.0:
        return "RoFormerForMaskedLM"
    what = (
        f"rotary positions with rope_theta {cfg.rope_theta:g}"
        if cfg.pos_encoding == "rotary"
        else f"{cfg.pos_encoding} positions"
    )
    raise ValueError(
        f"an encoder with {what} has no transformers equivalent (learned positions -> "
        "BertForMaskedLM, rotary positions with rope_theta 10000 -> RoFormerForMaskedLM)"
    )


def hf_name_map(cfg: ModelConfig) -> dict[str, str]:
    """lmkit parameter name -> ``BertForMaskedLM`` (or ``RobertaForMaskedLM``, ``RoFormerForMaskedLM``) parameter name.

    BERT weights are copied unchanged (RoBERTa's too, but for the position table's first rows). RoFormer rotates interleaved pairs of dimensions where lmkit
    rotates the two halves of each head, so its query/key rows are permuted: use
    :func:`to_hf_state`, which applies :func:`hf_rotary_permutation`. With tied embeddings the
    ``cls.predictions.decoder.weight`` (RoBERTa: ``lm_head.decoder.weight``) is the word embedding
    itself and is not listed.
    """
    arch = hf_architecture(cfg)
    root = {"BertForMaskedLM": "bert.", "RobertaForMaskedLM": "roberta."}.get(arch, "roformer.")
    e = root + "embeddings."
    head = "lm_head." if arch == "RobertaForMaskedLM" else "cls.predictions.transform."
    names = {
        "tok_emb.weight": e + "word_embeddings.weight",
        "type_emb.weight": e + "token_type_embeddings.weight",
        "emb_norm.weight": e + "LayerNorm.weight",
        "emb_norm.bias": e + "LayerNorm.bias",
        "head.dense.weight": head + "dense.weight",
        "head.dense.bias": head + "dense.bias",
        "head.norm.weight": head + ("layer_norm.weight" if arch == "RobertaForMaskedLM" else "LayerNorm.weight"),
        "head.norm.bias": head + ("layer_norm.bias" if arch == "RobertaForMaskedLM" else "LayerNorm.bias"),
        "head.bias": "lm_head.bias" if arch == "RobertaForMaskedLM" else "cls.predictions.bias",
    }
    if cfg.pos_encoding == "learned":
        names["pos_emb.weight"] = e + "position_embeddings.weight"
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"{root}encoder.layer.{i}."
        for p, q in (
            ("q_proj", "self.query"),
            ("k_proj", "self.key"),
            ("v_proj", "self.value"),
            ("o_proj", "output.dense"),
        ):
            for w in ("weight", "bias"):
                names[f"{ours}attn.{p}.{w}"] = f"{theirs}attention.{q}.{w}"
        for w in ("weight", "bias"):
            names[f"{ours}attn_norm.{w}"] = f"{theirs}attention.output.LayerNorm.{w}"
            names[f"{ours}mlp.fc_in.{w}"] = f"{theirs}intermediate.dense.{w}"
            names[f"{ours}mlp.fc_out.{w}"] = f"{theirs}output.dense.{w}"
            names[f"{ours}mlp_norm.{w}"] = f"{theirs}output.LayerNorm.{w}"
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = (
            "lm_head.decoder.weight" if arch == "RobertaForMaskedLM" else "cls.predictions.decoder.weight"
        )
    return names


def hf_rotary_permutation(cfg: ModelConfig) -> torch.Tensor:
    """Row order (d_model,) that turns lmkit's query/key projections into RoFormer's.

    lmkit pairs dimension i with i + head_dim/2 of each head ("rotate half"); RoFormer pairs 2i
    with 2i+1. Both rotate pair i by pos·10000^(-2i/head_dim), so RoFormer's row 2i is lmkit's
    row i and its row 2i+1 is lmkit's row i + head_dim/2 (within each head). Dot products between
    queries and keys are unchanged because both are permuted alike.
    """
    hd, half = cfg.head_dim, cfg.head_dim // 2
    within = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()  # (hd,)
    return torch.cat([h * hd + within for h in range(cfg.n_heads)])


def hf_config(cfg: ModelConfig) -> dict[str, object]:
    """The ``BertConfig`` / ``RobertaConfig`` / ``RoFormerConfig`` fields that describe this encoder
    (RoBERTa's position offset is its adapter's to add)."""
    arch = hf_architecture(cfg)
    out: dict[str, object] = {
        "architectures": [arch],
        "model_type": {"BertForMaskedLM": "bert", "RobertaForMaskedLM": "roberta"}.get(arch, "roformer"),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.ffn_width,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": cfg.max_seq_len,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.norm_eps,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "pad_token_id": 0,
    }
    if cfg.pos_encoding == "learned":
        out["position_embedding_type"] = "absolute"
    else:
        out["embedding_size"] = cfg.d_model
        out["rotary_value"] = False
    return out
