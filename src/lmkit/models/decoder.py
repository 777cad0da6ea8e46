"""Decoder-only transformer (GPT / Llama family), pre-trained by causal language modeling.

Read top to bottom:
    token ids ─▶ token embedding (+ learned or sinusoidal positions, if chosen)
              ─▶ n_layers × [x + Attention(RMSNorm(x)) ; x + SwiGLU(RMSNorm(x))]   (causal, rotary)
              ─▶ final RMSNorm ─▶ output projection ─▶ logits over the vocab
The output projection is the token embedding itself when ``model.tie_embeddings`` (the default),
else a separate ``lm_head`` (cpu-small unties it). The softmax over the vocabulary lives in the
loss (``layers.linear_cross_entropy``) and in the sampler (``lmkit.infer.sampling``). Each
position attends only to itself and earlier positions.

Weight names mirror Hugging Face's ``LlamaForCausalLM`` one to one (``tok_emb`` ↔
``model.embed_tokens``, ``blocks.i.attn.q_proj`` ↔ ``model.layers.i.self_attn.q_proj``, ...), with
rotary positions in the same "rotate half" layout, so export is a renaming (``lmkit.ship.export_hf``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmkit.config import ModelConfig
from lmkit.models.layers import Attention, KVCache, RMSNorm, linear_cross_entropy, register_position_tables


class SwiGLU(nn.Module):
    """Feed-forward network: down(silu(gate(x)) * up(x)), width d_model -> d_ff -> d_model."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """One pre-norm block: causal self-attention then feed-forward, each added to the residual."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg.d_model, cfg.n_heads, bias=False)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_width)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), rope=rope, causal=True, cache=cache, layer=layer))
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x  # (B, T, C)


class Decoder(nn.Module):
    """GPT/Llama-style language model: ``forward(input_ids)`` returns next-token logits."""

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
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.activation_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights; residual output projections scaled by 1/√(2·n_layers) (GPT-2)."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
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
        x = self.drop(x)
        rope = None
        if self.cfg.pos_encoding == "rotary":
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]  # (T, hd) or (B, 1, hd)
            rope = (cos, sin) if isinstance(pos, slice) else (cos[:, None], sin[:, None])  # ragged: (B, 1, 1, hd)
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
            self.cfg.n_heads,
            max_len or self.cfg.max_seq_len,
            self.cfg.head_dim,
            p.dtype,
            p.device,
        )

    def layers_for_sharding(self) -> list[nn.Module]:
        """Blocks that FSDP wraps one by one (parameters gathered per block)."""
        return list(self.blocks)


def hf_name_map(cfg: ModelConfig) -> dict[str, str]:
    """lmkit parameter name -> ``LlamaForCausalLM`` parameter name (weights are copied unchanged).

    Only rotary decoders map onto Llama (learned or sinusoidal positions have no Llama slot).
    """
    names = {"tok_emb.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        names[ours + "attn_norm.weight"] = theirs + "input_layernorm.weight"
        names[ours + "mlp_norm.weight"] = theirs + "post_attention_layernorm.weight"
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names[f"{ours}attn.{p}.weight"] = f"{theirs}self_attn.{p}.weight"
        for p in ("gate_proj", "up_proj", "down_proj"):
            names[f"{ours}mlp.{p}.weight"] = f"{theirs}mlp.{p}.weight"
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    return names


def hf_config(cfg: ModelConfig) -> dict[str, object]:
    """The ``LlamaConfig`` fields that describe this decoder exactly."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_width,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "head_dim": cfg.head_dim,
    }
