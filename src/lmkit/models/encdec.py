"""Encoder-decoder transformer (T5 family, and BART's layout), pre-trained by span corruption (or infilling).

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

The layout is ``T5ForConditionalGeneration``'s one to one (weight-only RMS norms, no biases), so
``hf_name_map`` is a pure renaming. Its variants are named fields (``lmkit.model_variants``): the MLP
(``model.mlp`` + ``model.activation``: T5 v1.0's plain ReLU ``wo(relu(wi(x)))``, the default; T5
v1.1 / Flan-T5's gated tanh-GELU ``wo(gelu_tanh(wi_0(x)) * wi_1(x))``) and the head width
(``model.head_size``, T5's ``d_kv``: n_heads × head_size need not be d_model, as in flan-t5-small's
6 × 64 heads on a 512 width). Flan-T5's untied head without output scaling is ``tie_embeddings: false``.
BART's layout is the other set of those fields (``model_variants`` keeps them together): ``norm: layer``
(LayerNorm with bias), ``bias: all`` (biases on every projection, and BART's fixed ``final_logits_bias``
buffer on the logits), ``residual: post`` (n(x + f(x)), so no final norm), ``embed_norm`` (a LayerNorm
after the embedding), ``pos_encoding: learned`` (a table of max_seq_len positions per stack instead of
relative buckets), attention scaled by 1/√hd, a plain MLP; its tied head is not scaled. Its names are
its adapter's (``lmkit.models.hf_adapters.bart``).

Generation: ``encode`` runs once, ``cross_kv`` projects the encoder states to every decoder layer's
cross-attention keys/values once, and ``decode`` advances the decoder with a ``KVCache`` for its
self-attention (see ``lmkit.infer.text.generate_seq2seq``).
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
from lmkit.models.decoder import ACTIVATIONS
from lmkit.models.layers import Attention, KVCache, RMSNorm
from lmkit.models.loss import linear_cross_entropy

REL_BUCKETS = 32  # T5's relative_attention_num_buckets
REL_MAX_DISTANCE = 128  # T5's relative_attention_max_distance
MLP_ACTIVATIONS = {**ACTIVATIONS, "relu": F.relu}  # model.activation -> function (relu: T5 v1.0's)


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


class FeedForward(nn.Module):
    """T5's feed-forward, width d_model -> d_ff -> d_model, no biases: plain ``wo(act(wi(x)))`` (T5 v1.0's
    DenseReluDense) or gated ``wo(act(wi_0(x)) * wi_1(x))`` (T5 v1.1's DenseGatedActDense)."""

    wi: nn.Linear | None  # plain
    wi_0: nn.Linear | None  # gated: the activated half
    wi_1: nn.Linear | None  # gated: the linear half

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, f, bias = cfg.d_model, cfg.ffn_width, cfg.bias == "all"  # biases: BART's fc1/fc2
        self.act = MLP_ACTIVATIONS[cfg.activation]
        if cfg.mlp == "gated":
            self.wi, self.wi_0, self.wi_1 = None, nn.Linear(d, f, bias=bias), nn.Linear(d, f, bias=bias)
        else:
            self.wi, self.wi_0, self.wi_1 = nn.Linear(d, f, bias=bias), None, None
        self.wo = nn.Linear(f, d, bias=bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wi is not None:
            h = self.act(self.wi(x))  # (B, T, f)
        else:
            h = self.act(cast(nn.Linear, self.wi_0)(x)) * cast(nn.Linear, self.wi_1)(x)  # (B, T, f)
        return self.wo(self.dropout(h))  # (B, T, C)


def make_norm(cfg: ModelConfig) -> nn.Module:
    """T5's weight-only RMSNorm, or BART's LayerNorm with bias (``model.norm: layer``)."""
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.norm == "layer" else RMSNorm(cfg.d_model, cfg.norm_eps)


class Block(nn.Module):
    """One block: self-attention, (decoder only) cross-attention, feed-forward; pre-norm (T5: x + f(n(x)))
    or post-norm (BART: n(x + f(x)))."""

    cross_norm: nn.Module | None  # both set in decoder blocks, both None in encoder blocks
    cross_attn: Attention | None

    def __init__(self, cfg: ModelConfig, is_decoder: bool) -> None:
        super().__init__()
        hd, bias = cfg.head_dim, cfg.bias == "all"  # T5's d_kv: n_heads × hd may differ from d_model
        scale = None if cfg.norm == "layer" else 1.0  # T5 leaves out 1/√hd (folded into its initialisation)
        self.post = cfg.residual == "post"
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg.d_model, cfg.n_heads, bias=bias, scale=scale, head_dim=hd)
        if is_decoder:
            self.cross_norm = make_norm(cfg)
            self.cross_attn = Attention(cfg.d_model, cfg.n_heads, bias=bias, scale=scale, head_dim=hd)
        else:
            self.cross_norm = self.cross_attn = None
        self.mlp_norm = make_norm(cfg)
        self.mlp = FeedForward(cfg)
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
        if self.post:  # BART
            x = self.attn_norm(x + self.dropout(self.attn(x, attn_bias=bias, cache=cache, layer=layer)))
            if self.cross_attn is not None:
                cross = self.cross_attn(x, context=context, context_kv=context_kv, attn_bias=context_keep)
                x = cast(nn.Module, self.cross_norm)(x + self.dropout(cross))
            return self.mlp_norm(x + self.dropout(self.mlp(x)))  # (B, T, C)
        x = x + self.dropout(self.attn(self.attn_norm(x), attn_bias=bias, cache=cache, layer=layer))
        if self.cross_attn is not None:
            cross_norm = cast(nn.Module, self.cross_norm)  # set together with cross_attn
            x = x + self.dropout(
                self.cross_attn(cross_norm(x), context=context, context_kv=context_kv, attn_bias=context_keep)
            )
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x  # (B, T, C)


class Stack(nn.Module):
    """The encoder or the decoder: blocks and its positions (T5: one relative-position bias table, a final
    norm; BART: a learned position table and a norm right after the embedding, no final norm)."""

    rel_bias: nn.Embedding | None
    pos_emb: nn.Embedding | None
    emb_norm: nn.Module | None
    norm: nn.Module | None

    def __init__(self, cfg: ModelConfig, n_layers: int, is_decoder: bool) -> None:
        super().__init__()
        self.is_decoder = is_decoder
        self.n_heads = cfg.n_heads
        self.blocks = nn.ModuleList(Block(cfg, is_decoder) for _ in range(n_layers))
        learned = cfg.norm == "layer"  # the BART layout (model_variants keeps its fields together)
        self.rel_bias = None if learned else nn.Embedding(REL_BUCKETS, cfg.n_heads)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model) if learned else None  # (positions, C)
        self.emb_norm = make_norm(cfg) if cfg.embed_norm else None
        self.norm = None if cfg.residual == "post" else make_norm(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.activation_checkpointing = False

    def anchor(self) -> torch.Tensor:
        """A float parameter of this stack, for the activations' device and dtype (norms are never quantised)."""
        return cast(torch.Tensor, cast(Block, self.blocks[0]).mlp_norm.weight)

    def position_bias(self, q_len: int, k_len: int, past: int = 0) -> torch.Tensor:
        """Additive attention bias (1, H, q_len, k_len) for queries at past..past+q_len-1.

        In the decoder the causal mask (−inf on keys after the query) is folded in.
        """
        device = self.anchor().device
        q_pos = torch.arange(past, past + q_len, device=device)[:, None]  # (T, 1)
        k_pos = torch.arange(k_len, device=device)[None, :]  # (1, S)
        if self.rel_bias is None:  # learned positions: only the causal mask (decoder)
            bias = torch.zeros(1, 1, q_len, k_len, device=device, dtype=self.anchor().dtype)
        else:
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
        if self.pos_emb is not None:
            if past + T > self.pos_emb.num_embeddings:
                raise ValueError(f"position {past + T - 1} is past the {self.pos_emb.num_embeddings} learned positions")
            x = x + self.pos_emb.weight[past : past + T]  # (B, T, C)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        bias = self.position_bias(T, past + T, past)  # (1, H or 1, T, past+T)
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
        return self.drop(x if self.norm is None else self.norm(x))


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
        self.final_logits_bias: torch.Tensor | None  # BART's fixed (1, vocab) buffer added to the logits
        if cfg.bias == "all":
            self.register_buffer("final_logits_bias", torch.zeros(1, cfg.vocab_size))
        else:
            self.final_logits_bias = None
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
        if self.cfg.norm == "layer":  # BART's: Normal(0, 0.02) matrices and embeddings, zero biases, unit norms
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
            return
        nn.init.normal_(self.tok_emb.weight, std=1.0)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=d**-0.5)
        for stack in (self.encoder, self.decoder):
            nn.init.normal_(cast(nn.Embedding, stack.rel_bias).weight, std=d**-0.5)
            for module in stack.modules():
                if isinstance(module, Attention):
                    nn.init.normal_(module.q_proj.weight, std=(d * hd) ** -0.5)
                    nn.init.normal_(module.k_proj.weight, std=d**-0.5)
                    nn.init.normal_(module.v_proj.weight, std=d**-0.5)
                    nn.init.normal_(module.o_proj.weight, std=d**-0.5)
                elif isinstance(module, FeedForward):
                    for wi in (module.wi, module.wi_0, module.wi_1):
                        if wi is not None:
                            nn.init.normal_(wi.weight, std=d**-0.5)
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
        return self.cfg.d_model**-0.5 if self.lm_head is None and self.cfg.norm == "rms" else 1.0

    @property
    def output_bias(self) -> torch.Tensor | None:
        """The (vocab,) bias added to the logits (BART's ``final_logits_bias``), or None."""
        return None if self.final_logits_bias is None else self.final_logits_bias[0]

    # ------------------------------------------------------------------ the two halves

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states (B, S, C) of input ids (B, S); attention_mask (B, S) is 0 on padding."""
        if input_ids.shape[1] > self.cfg.max_seq_len:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens exceeds the context window of {self.cfg.max_seq_len}"
            )
        return self.encoder(self.tok_emb(input_ids), keep=attention_mask)

    def cross_kv(self, enc: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values (B, H, S, hd) of encoder states (B, S, C).

        Plain linear projections run as one matmul with every layer's key and value weights stacked:
        one pass over the encoder states, and in training one matmul for their gradient instead of
        2 × n_decoder_layers matmuls and as many sums. Others (int8 storage) run layer by layer.
        """
        attns = [cast(Attention, b.cross_attn) for b in cast("Iterable[Block]", self.decoder.blocks)]
        projs = [p for a in attns for p in (a.k_proj, a.v_proj)]
        if not all(type(p) is nn.Linear for p in projs):
            return [(a.split_heads(a.k_proj(enc)), a.split_heads(a.v_proj(enc))) for a in attns]
        weight = torch.cat([p.weight for p in projs])  # (layers · 2 · H·hd, C)
        bias = None if projs[0].bias is None else torch.cat([p.bias for p in projs])
        kv = F.linear(enc, weight, bias).split(attns[0].n_kv_heads * attns[0].head_dim, dim=-1)  # each (B, S, H·hd)
        return [(a.split_heads(kv[2 * i]), a.split_heads(kv[2 * i + 1])) for i, a in enumerate(attns)]

    def _sharded(self) -> bool:
        block = cast("Iterable[Block]", self.decoder.blocks)
        return any(hasattr(p, "device_mesh") for p in next(iter(block)).parameters())

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
        # all layers' in one matmul, unless blocks must project their own: checkpointed ones recompute
        # theirs, and FSDP-sharded ones (DTensor weights, having a device_mesh) hold whole weights only inside
        if cross_kv is None and enc is not None and not self.activation_checkpointing and not self._sharded():
            cross_kv = self.cross_kv(enc)
        return self.decoder(
            self.tok_emb(decoder_input_ids), context=enc, context_keep=attention_mask, context_kv=cross_kv, cache=cache
        )

    def logits(self, dec: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (..., vocab) of decoder states (..., C)."""
        return F.linear(dec * self.output_scale, self.output_weight, self.output_bias)

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
            (dec * self.output_scale).flatten(0, 1), self.output_weight, labels[:, :T].flatten(), bias=self.output_bias
        )

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty self-attention cache for the decoder (default length: max_target_len)."""
        p = self.decoder.anchor()  # the activations' dtype (tok_emb.weight would dequantise an int8 table)
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


# model.activation -> transformers' activation name (ACT2FN) as T5 reads it from feed_forward_proj
HF_ACTIVATION = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu"}


def feed_forward_proj(cfg: ModelConfig) -> str:
    """T5's ``feed_forward_proj`` of this MLP: ``relu`` (v1.0), ``gated-gelu`` (v1.1: transformers reads it
    as tanh-GELU), else ``[gated-]<activation>`` (exact GELU gated: ``gated-gelu_python``, erf-based)."""
    if cfg.mlp == "gated":
        return {"gelu_tanh": "gated-gelu", "gelu": "gated-gelu_python"}.get(cfg.activation, f"gated-{cfg.activation}")
    return HF_ACTIVATION[cfg.activation]


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
            for w in ("wi_0", "wi_1", "wo") if cfg.mlp == "gated" else ("wi", "wo"):
                names[f"{ours}mlp.{w}.weight"] = f"{theirs}{mlp}.DenseReluDense.{w}.weight"
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
        "feed_forward_proj": feed_forward_proj(cfg),
        "dense_act_fn": HF_ACTIVATION[cfg.activation],
        "is_gated_act": cfg.mlp == "gated",
        "is_encoder_decoder": True,
        "tie_word_embeddings": cfg.tie_embeddings,
        "pad_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 0,
        "initializer_factor": 1.0,
    }
