"""Encoder-decoder transformer (T5 family), pre-trained by span corruption.

Read top to bottom:
    input ids ─▶ shared embedding ─▶ encoder: n_layers × [x + SelfAttn(RMSNorm(x)) ; x + ReLU-MLP(RMSNorm(x))]
              (bidirectional, relative position bias) ─▶ RMSNorm ─▶ encoder states (B, S, C)
    decoder ids ─▶ shared embedding ─▶ decoder: n_decoder_layers ×
              [x + causal SelfAttn(RMSNorm(x)) ; x + CrossAttn(RMSNorm(x), encoder states) ; x + MLP(RMSNorm(x))]
              ─▶ RMSNorm ─▶ output projection ─▶ logits
The encoder reads the whole (corrupted) input both ways; the decoder writes the output left to
right, looking at what it has written (causal self-attention) and at the encoder states
(cross-attention): the family for text-to-text tasks (translation, summarisation, QA).

Positions are T5's: no position embeddings; each attention layer adds a learned bias per head that
depends on the bucketed distance key − query (32 buckets, exact up to 8 then logarithmic up to 128,
signed in the encoder, only looking back in the decoder). The bias table lives in the first layer
of each stack and is shared by all its layers. Attention scores are not scaled by 1/√d (T5 folds
that into the initialisation). The output projection is the shared embedding when
``model.tie_embeddings`` (the default), with the decoder output scaled by d_model^-0.5 before it,
as T5 does; untied, it is a separate ``lm_head`` and nothing is scaled.

The layout is ``T5ForConditionalGeneration``'s (T5 v1.0: ReLU MLP ``wi``/``wo``, weight-only RMS
norms, no biases) one to one, so ``hf_name_map`` is a pure renaming.

Generation: ``encode`` runs once, ``cross_kv`` projects the encoder states to every decoder layer's
cross-attention keys/values once, and ``decode`` advances the decoder with a ``KVCache`` for its
self-attention (see ``lmkit.infer.generate.generate_seq2seq``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeGuard, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmkit.config import ModelConfig
from lmkit.models.layers import Attention, KVCache, RMSNorm, linear_cross_entropy

REL_BUCKETS = 32  # T5's relative_attention_num_buckets
REL_MAX_DISTANCE = 128  # T5's relative_attention_max_distance


def relative_position_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool,
    num_buckets: int = REL_BUCKETS,
    max_distance: int = REL_MAX_DISTANCE,
) -> torch.Tensor:
    """T5's bucket of each relative position (key − query), an integer tensor of the same shape.

    Bidirectional: half the buckets for keys after the query, half for keys before. Within a half,
    distances below ``num_buckets/4`` get a bucket each; larger ones share logarithmically wider
    buckets, and everything from ``max_distance`` on shares the last one. Unidirectional (decoder):
    all buckets for looking back; keys ahead land in bucket 0 (the causal mask hides them anyway).
    """
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    exact = num_buckets // 2
    is_small = distance < exact
    log_ratio = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return bucket + torch.where(is_small, distance, large)


def _has_padding(keep: torch.Tensor | None) -> TypeGuard[torch.Tensor]:
    """Whether a (B, T) keep-mask hides anything. A mask with no padding changes nothing, and leaving
    it out keeps the encoder's bias (1, H, T, T), shared by the batch, instead of a (B, H, T, T) copy
    whose gradient is reduced layer by layer. A compiled graph keeps every mask: looking at its
    values would split the graph."""
    return keep is not None and (torch.compiler.is_compiling() or not bool(keep.all()))


class ReluMLP(nn.Module):
    """T5's DenseReluDense: wo(relu(wi(x))), width d_model -> d_ff -> d_model, no biases."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.wi = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(F.relu(self.wi(x))))


class Block(nn.Module):
    """One pre-norm T5 block: self-attention, (decoder only) cross-attention, feed-forward."""

    cross_norm: RMSNorm | None  # both set in decoder blocks, both None in encoder blocks
    cross_attn: Attention | None

    def __init__(self, cfg: ModelConfig, is_decoder: bool) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg.d_model, cfg.n_heads, bias=False, scale=1.0)
        if is_decoder:
            self.cross_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.cross_attn = Attention(cfg.d_model, cfg.n_heads, bias=False, scale=1.0)
        else:
            self.cross_norm = self.cross_attn = None
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = ReluMLP(cfg.d_model, cfg.ffn_width, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        context: torch.Tensor | None = None,
        context_keep: torch.Tensor | None = None,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        # bias: (1 or B, H, T, T_keys) position bias with the causal/padding mask folded in
        x = x + self.dropout(self.attn(self.attn_norm(x), attn_bias=bias, cache=cache, layer=layer))
        if self.cross_attn is not None:
            cross_norm = cast(RMSNorm, self.cross_norm)  # set together with cross_attn
            x = x + self.dropout(
                self.cross_attn(cross_norm(x), context=context, context_kv=context_kv, attn_bias=context_keep)
            )
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x  # (B, T, C)


class Stack(nn.Module):
    """The encoder or the decoder: blocks, one relative-position bias table, a final norm."""

    def __init__(self, cfg: ModelConfig, n_layers: int, is_decoder: bool) -> None:
        super().__init__()
        self.is_decoder = is_decoder
        self.n_heads = cfg.n_heads
        self.blocks = nn.ModuleList(Block(cfg, is_decoder) for _ in range(n_layers))
        self.rel_bias = nn.Embedding(REL_BUCKETS, cfg.n_heads)
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.activation_checkpointing = False

    def position_bias(self, q_len: int, k_len: int, past: int = 0) -> torch.Tensor:
        """Additive attention bias (1, H, q_len, k_len) for queries at past..past+q_len-1.

        In the decoder the causal mask (−inf on keys after the query) is folded in.
        """
        device = self.rel_bias.weight.device
        q_pos = torch.arange(past, past + q_len, device=device)[:, None]  # (T, 1)
        k_pos = torch.arange(k_len, device=device)[None, :]  # (1, S)
        buckets = relative_position_bucket(k_pos - q_pos, bidirectional=not self.is_decoder)  # (T, S)
        bias = self.rel_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, T, S)
        if self.is_decoder:
            bias = bias.masked_fill(k_pos > q_pos, float("-inf"))
        return bias

    def forward(
        self,
        x: torch.Tensor,
        keep: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_keep: torch.Tensor | None = None,
        context_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) embedded tokens -> final normalised states (B, T, C).

        keep (B, T) marks real (non-padding) tokens of x for self-attention (encoder);
        context_keep (B, S) marks real tokens of the encoder output for cross-attention.
        """
        T = x.shape[1]
        past = cache.length if cache is not None else 0
        bias = self.position_bias(T, past + T, past)  # (1, H, T, past+T)
        if _has_padding(keep):
            bias = bias.masked_fill(~keep.to(torch.bool)[:, None, None, :], float("-inf"))  # (B, H, T, T)
        ckeep = context_keep.to(torch.bool)[:, None, None, :] if _has_padding(context_keep) else None  # (B,1,1,S)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            kv = context_kv[i] if context_kv is not None else None
            if self.activation_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, bias, context, ckeep, kv, use_reentrant=False)
            else:
                x = block(x, bias, context, ckeep, kv, cache, i)
        if cache is not None:
            cache.length += T
        return self.drop(self.norm(x))


class EncoderDecoder(nn.Module):
    """T5-style text-to-text model: ``forward(input_ids, decoder_input_ids)`` returns decoder logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_decoder_layers = cfg.n_decoder_layers or cfg.n_layers
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)  # T5's "shared"
        self.encoder = Stack(cfg, cfg.n_layers, is_decoder=False)
        self.decoder = Stack(cfg, self.n_decoder_layers, is_decoder=True)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()

    @property
    def activation_checkpointing(self) -> bool:
        return self.encoder.activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, on: bool) -> None:
        self.encoder.activation_checkpointing = self.decoder.activation_checkpointing = on

    def reset_parameters(self) -> None:
        """T5's initialisation (Mesh TensorFlow): each matrix scaled by its fan-in, embeddings N(0, 1).

        Queries get an extra 1/√head_dim, which stands in for the attention scaling T5 leaves out.
        """
        d, hd, ff = self.cfg.d_model, self.cfg.head_dim, self.cfg.ffn_width
        nn.init.normal_(self.tok_emb.weight, std=1.0)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=d**-0.5)
        for stack in (self.encoder, self.decoder):
            nn.init.normal_(stack.rel_bias.weight, std=d**-0.5)
            for module in stack.modules():
                if isinstance(module, Attention):
                    nn.init.normal_(module.q_proj.weight, std=(d * hd) ** -0.5)
                    nn.init.normal_(module.k_proj.weight, std=d**-0.5)
                    nn.init.normal_(module.v_proj.weight, std=d**-0.5)
                    nn.init.normal_(module.o_proj.weight, std=d**-0.5)
                elif isinstance(module, ReluMLP):
                    nn.init.normal_(module.wi.weight, std=d**-0.5)
                    nn.init.normal_(module.wo.weight, std=ff**-0.5)
                elif isinstance(module, RMSNorm):
                    nn.init.ones_(module.weight)

    @property
    def output_weight(self) -> torch.Tensor:
        """The (vocab, d_model) matrix that turns decoder states into logits."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    @property
    def output_scale(self) -> float:
        """What decoder states are multiplied by before the output projection (T5 with tied weights)."""
        return self.cfg.d_model**-0.5 if self.lm_head is None else 1.0

    # ------------------------------------------------------------------ the two halves

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states (B, S, C) of input ids (B, S); attention_mask (B, S) is 0 on padding."""
        if input_ids.shape[1] > self.cfg.max_seq_len:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens exceeds the context window of {self.cfg.max_seq_len}"
            )
        return self.encoder(self.tok_emb(input_ids), keep=attention_mask)

    def cross_kv(self, enc: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values (B, H, S, hd) of encoder states (B, S, C)."""
        out = []
        for block in cast("Iterable[Block]", self.decoder.blocks):  # a ModuleList yields Module
            a = cast(Attention, block.cross_attn)  # every decoder block has cross-attention
            out.append((a.split_heads(a.k_proj(enc)), a.split_heads(a.v_proj(enc))))
        return out

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        enc: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Final decoder states (B, T, C) of decoder ids (B, T), attending to encoder states ``enc``.

        Give ``cross_kv`` (from :meth:`cross_kv`) instead of ``enc`` to reuse the cross-attention
        keys/values; ``cache`` holds the decoder's self-attention keys/values between calls.
        """
        return self.decoder(
            self.tok_emb(decoder_input_ids), context=enc, context_keep=attention_mask, context_kv=cross_kv, cache=cache
        )

    def logits(self, dec: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (..., vocab) of decoder states (..., C)."""
        return F.linear(dec * self.output_scale, self.output_weight)

    def forward(
        self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, T, vocab) of the next target token at every decoder position."""
        enc = self.encode(input_ids, attention_mask)
        return self.logits(self.decode(decoder_input_ids, enc, attention_mask))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy of the target tokens (labels ≠ -100) given the input and the target prefix."""
        mask = batch.get("attention_mask")
        labels = batch["labels"]  # (B, T), -100 after each target's end
        # The decoder is causal, so target positions after the last scored one change nothing before
        # them: decode only up to the longest target in the batch, not the padded max_target_len
        # (a compiled graph decodes them all and keeps one shape).
        T = labels.shape[1]
        if not torch.compiler.is_compiling():
            scored = (labels != -100).any(dim=0).nonzero()
            T = int(scored[-1]) + 1 if len(scored) else 1
        enc = self.encode(batch["input_ids"], mask)  # (B, S, C)
        dec = self.decode(batch["decoder_input_ids"][:, :T], enc, mask)  # (B, T, C)
        return linear_cross_entropy(
            (dec * self.output_scale).flatten(0, 1), self.output_weight, labels[:, :T].flatten()
        )

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty self-attention cache for the decoder (default length: max_target_len)."""
        p = self.decoder.norm.weight  # the activations' dtype; tok_emb.weight would dequantise an int8 table
        return KVCache(
            self.n_decoder_layers,
            batch,
            self.cfg.n_heads,
            max_len or self.cfg.max_target_len,
            self.cfg.head_dim,
            p.dtype,
            p.device,
        )

    def layers_for_sharding(self) -> list[nn.Module]:
        """Blocks that FSDP wraps one by one (parameters gathered per block)."""
        return [*self.encoder.blocks, *self.decoder.blocks]


def hf_name_map(cfg: ModelConfig) -> dict[str, str]:
    """lmkit parameter name -> ``T5ForConditionalGeneration`` parameter name (weights copied unchanged).

    With tied embeddings T5's ``encoder.embed_tokens``, ``decoder.embed_tokens`` and ``lm_head``
    are the ``shared`` matrix itself and are not listed.
    """
    names = {"tok_emb.weight": "shared.weight"}
    for stack, n in (("encoder", cfg.n_layers), ("decoder", cfg.n_decoder_layers or cfg.n_layers)):
        names[f"{stack}.rel_bias.weight"] = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        names[f"{stack}.norm.weight"] = f"{stack}.final_layer_norm.weight"
        for i in range(n):
            ours, theirs = f"{stack}.blocks.{i}.", f"{stack}.block.{i}.layer."
            names[ours + "attn_norm.weight"] = theirs + "0.layer_norm.weight"
            for p in "qkvo":
                names[f"{ours}attn.{p}_proj.weight"] = f"{theirs}0.SelfAttention.{p}.weight"
            mlp = 1
            if stack == "decoder":
                names[ours + "cross_norm.weight"] = theirs + "1.layer_norm.weight"
                for p in "qkvo":
                    names[f"{ours}cross_attn.{p}_proj.weight"] = f"{theirs}1.EncDecAttention.{p}.weight"
                mlp = 2
            names[ours + "mlp_norm.weight"] = f"{theirs}{mlp}.layer_norm.weight"
            names[ours + "mlp.wi.weight"] = f"{theirs}{mlp}.DenseReluDense.wi.weight"
            names[ours + "mlp.wo.weight"] = f"{theirs}{mlp}.DenseReluDense.wo.weight"
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    return names


def hf_config(cfg: ModelConfig) -> dict[str, object]:
    """The ``T5Config`` fields that describe this encoder-decoder exactly."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.head_dim,
        "d_ff": cfg.ffn_width,
        "num_layers": cfg.n_layers,
        "num_decoder_layers": cfg.n_decoder_layers or cfg.n_layers,
        "num_heads": cfg.n_heads,
        "relative_attention_num_buckets": REL_BUCKETS,
        "relative_attention_max_distance": REL_MAX_DISTANCE,
        "dropout_rate": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_eps,
        "feed_forward_proj": "relu",
        "is_encoder_decoder": True,
        "tie_word_embeddings": cfg.tie_embeddings,
        "pad_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 0,
        "initializer_factor": 1.0,
    }
