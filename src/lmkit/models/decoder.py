"""Decoder-only transformer (GPT / Llama family), pre-trained by causal language modeling.

Read top to bottom:
    token ids ─▶ token embedding (+ learned or sinusoidal positions, if chosen) (─▶ norm, if embed_norm)
              ─▶ n_layers × [x + Attention(Norm(x)) ; x + MLP(Norm(x))]          (causal; residual "pre")
                         or [x + Attention(Norm₁(x)) + MLP(Norm₂(x))]              (residual "parallel")
              ─▶ final Norm ─▶ output projection ─▶ logits over the vocab
The output projection is the token embedding itself when ``model.tie_embeddings`` (the default),
else a separate ``lm_head`` (cpu-small unties it). The softmax over the vocabulary lives in the
loss (``layers.linear_cross_entropy``) and in the sampler (``lmkit.infer.sampling``). Each
position attends only to itself and earlier positions.

The architecture variants are named config fields (``lmkit.model_variants``), and their defaults are
lmkit's own layout: RMSNorm (``norm: layer`` is LayerNorm with bias), no biases (``bias: qkv`` on
the query/key/value projections, ``all`` on every linear layer), a gated SwiGLU MLP (``mlp: plain``
is down(act(up(x))); ``activation`` silu, exact gelu or tanh-gelu), one key/value head per query
head (``n_kv_heads``), heads of d_model / n_heads (``head_size``), rotary positions on whole heads
(``rotary_fraction``, ``rope_scaling``) or learned, sinusoidal or ALiBi positions. Together they
cover the layouts of Llama, Qwen2, GPT-2, GPT-NeoX and BLOOM; how each Hugging Face class stores
its tensors (fused, transposed, interleaved per head) is its adapter's business
(``lmkit.models.hf_adapters``), never this module's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmkit.config import ModelConfig
from lmkit.models.layers import Attention, KVCache, RMSNorm
from lmkit.models.loss import linear_cross_entropy
from lmkit.models.positions import register_position_tables

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def make_norm(cfg: ModelConfig) -> RMSNorm | nn.LayerNorm:
    """The configured normalisation over d_model: RMSNorm (weight) or LayerNorm (weight and bias)."""
    return RMSNorm(cfg.d_model, cfg.norm_eps) if cfg.norm == "rms" else nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)


class FeedForward(nn.Module):
    """Feed-forward network, width d_model -> d_ff -> d_model: gated ``down(act(gate(x)) * up(x))``
    (SwiGLU with silu) or plain ``down(act(up(x)))``; biases with ``model.bias: all``."""

    gate_proj: nn.Linear | None

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, f, bias = cfg.d_model, cfg.ffn_width, cfg.bias == "all"
        self.gate_proj = nn.Linear(d, f, bias=bias) if cfg.mlp == "gated" else None
        self.up_proj = nn.Linear(d, f, bias=bias)
        self.down_proj = nn.Linear(f, d, bias=bias)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is not None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)
        return self.down_proj(self.act(self.up_proj(x)))


class DecoderBlock(nn.Module):
    """One block: causal self-attention and feed-forward, each reading a normalised residual stream.

    ``pre``: the MLP reads the stream after attention was added; ``parallel`` (GPT-NeoX): both read
    the block's input and both outputs are added to it."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(
            cfg.d_model,
            cfg.n_heads,
            bias=cfg.bias != "none",
            n_kv_heads=cfg.kv_heads,
            head_dim=cfg.head_dim,
            out_bias=cfg.bias == "all",
            alibi=cfg.pos_encoding == "alibi",
        )
        self.mlp_norm = make_norm(cfg)
        self.mlp = FeedForward(cfg)
        self.parallel = cfg.residual == "parallel"
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        a = self.dropout(self.attn(self.attn_norm(x), rope=rope, causal=True, cache=cache, layer=layer))
        if self.parallel:
            return x + a + self.dropout(self.mlp(self.mlp_norm(x)))  # (B, T, C)
        x = x + a
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x  # (B, T, C)


class Decoder(nn.Module):
    """GPT/Llama-style language model: ``forward(input_ids)`` returns next-token logits."""

    # set by register_position_tables (rope_cos/rope_sin (max_seq_len, rotated dims) only with rotary positions)
    pos_emb: nn.Embedding | None
    pos_table: torch.Tensor | None
    emb_norm: RMSNorm | nn.LayerNorm | None
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        register_position_tables(self, cfg)
        self.emb_norm = make_norm(cfg) if cfg.embed_norm else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.activation_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights; residual output projections scaled by 1/√(2·n_layers) (GPT-2);
        biases 0, norm weights 1."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
                if name.endswith(".bias"):
                    nn.init.zeros_(p)
                continue  # norm weights stay at 1
            std = 0.02
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                std = 0.02 / (2 * self.cfg.n_layers) ** 0.5
            nn.init.normal_(p, mean=0.0, std=std)

    @property
    def output_weight(self) -> torch.Tensor:
        """The (vocab, d_model) matrix that turns hidden states into logits."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final normalised hidden states (B, T, C) of token ids (B, T).

        With a ragged cache (``cache.lengths`` set: each row a separate request) T is 1 and each
        row's token sits at that row's own position.
        """
        B, T = input_ids.shape
        pos: torch.Tensor | slice
        if cache is not None and cache.lengths is not None:
            pos = cache.lengths[:, None]  # (B, 1): each row's own next position
            end = int(cache.lengths.max()) + T
        else:
            start = cache.length if cache is not None else 0
            pos, end = slice(start, start + T), start + T  # the same positions for every row
        if end > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {end} tokens exceeds the context window of {self.cfg.max_seq_len}")
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb.weight[pos]  # (T, C) or (B, 1, C)
        elif self.pos_table is not None:
            x = x + self.pos_table[pos]
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.drop(x)
        rope = None
        if self.cfg.pos_encoding == "rotary":
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]  # (T, rd) or (B, 1, rd)
            rope = (cos, sin) if isinstance(pos, slice) else (cos[:, None], sin[:, None])  # ragged: (B, 1, 1, rd)
        for i, block in enumerate(self.blocks):
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope, cache, i)
        if cache is not None and cache.lengths is not None:
            cache.lengths = cache.lengths + T
        elif cache is not None:
            cache.length += T
        return self.norm(x)  # (B, T, C)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) of the next token at every position of input_ids (B, T)."""
        return F.linear(self.hidden_states(input_ids, cache), self.output_weight)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Causal LM loss: mean cross-entropy of predicting labels[t] (= input_ids[t+1]) at each t."""
        h = self.hidden_states(batch["input_ids"])  # (B, T, C)
        return linear_cross_entropy(h.flatten(0, 1), self.output_weight, batch["labels"].flatten())

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        p = self.norm.weight  # the activations' dtype; reading tok_emb.weight would dequantise an int8 table
        return KVCache(
            self.cfg.n_layers,
            batch,
            self.cfg.kv_heads,  # grouped-query attention caches the key/value heads only
            max_len or self.cfg.max_seq_len,
            self.cfg.head_dim,
            p.dtype,
            p.device,
        )

    def layers_for_sharding(self) -> list[nn.Module]:
        """Blocks that FSDP wraps one by one (parameters gathered per block)."""
        return list(self.blocks)
