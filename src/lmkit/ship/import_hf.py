"""Import a Hugging Face ``transformers`` folder as an lmkit checkpoint: ``lmkit import-hf DIR --out CKPT``.

:func:`import_hf` reads a folder of one of the four classes lmkit exports to (``LlamaForCausalLM``,
``BertForMaskedLM``, ``RoFormerForMaskedLM``, ``T5ForConditionalGeneration``; ``lmkit.models.hf``),
saved on disk: safetensors, sharded safetensors, or ``pytorch_model.bin`` read with
``torch.load(weights_only=True)``. It does so only when lmkit can represent its config exactly
(:func:`lmkit_config_from_hf`); otherwise it says which setting has no lmkit equivalent
(grouped-query attention, biases, gated/other activations, rope scaling, ...). Every tensor of the
file must have a place (:func:`from_hf_state`): tied tensors may appear as copies and must then
equal the embedding; RoFormer's query/key rows are put back into lmkit's order.
``tokenizer.json`` is carried over when it is an lmkit tokenizer (lmkit's special tokens at ids
0..104); for another tokenizer the message says what to pass instead. Weights become float32.
``meta.json`` records where the model came from; when the folder is an lmkit export whose weights
are unchanged (``lmkit_meta.json``'s sha256 matches), the original training record is kept too.

Why by hand: ``transformers`` could load these folders, but the name maps are the contract the
parity tests pin down, and import must refuse what lmkit cannot represent rather than load it
approximately. The command's flags and printing live in ``lmkit.cli.ship``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.files import check_out_dir, sha256_file
from lmkit.models.hf import (
    EXPORT_FORMAT,
    HF_COPIES,
    HF_EMBEDDING,
    HF_TIED_TO_EMBEDDING,
    LMKIT_META_FILE,
    ROFORMER,
    ROFORMER_TABLE,
    TARGET_OF_ARCHITECTURE,
    TARGET_OF_MODEL_TYPE,
    name_map,
    roformer_sinusoid_table,
    row_orders,
    target_of,
)

if TYPE_CHECKING:
    import torch

    from lmkit.config import ModelConfig
    from lmkit.tokenizer import Tokenizer


# --------------------------------------------------------------------------- weights


def from_hf_state(hf: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    """lmkit's tensors from a transformers state (names by the family's map), after checking every key.

    Tensors tied in lmkit may appear in the file as copies; they must then equal the embedding. Keys
    that carry no weights (rotary ``inv_freq``, ``position_ids``) and the parts of BERT/RoFormer
    that a masked LM does not use (pooler, next-sentence head) are skipped; RoFormer's sinusoid
    table must be the standard one. RoFormer's query/key rows are put back into lmkit's order
    (:func:`row_orders`).
    """
    import torch

    names = name_map(cfg, source)
    hf = _legacy_renames(hf)
    fam = cfg.family
    arch = target_of(cfg, source).architecture
    if arch in ("BertForMaskedLM", "RoFormerForMaskedLM") and not cfg.tie_embeddings \
            and "cls.predictions.decoder.bias" in hf:
        # Untied, transformers computes logits with the decoder's own bias and never reads
        # cls.predictions.bias (tied, it is the reverse): lmkit's one bias is the one in use.
        hf["cls.predictions.bias"] = hf["cls.predictions.decoder.bias"]
    missing = [theirs for theirs in names.values() if theirs not in hf]
    if missing:
        raise LmkitError(f"{source}: weights missing for {arch}: {missing[:4]}"
                         + (f" (and {len(missing) - 4} more)" if len(missing) > 4 else ""))
    used = set(names.values())
    emb = hf[HF_EMBEDDING[arch]]
    for key in hf:
        if key in used or _ignorable(key):
            continue
        if key in HF_COPIES[arch]:
            if not torch.equal(hf[key], hf[HF_COPIES[arch][key]]):
                raise LmkitError(f"{source}: {key} differs from {HF_COPIES[arch][key]}; lmkit has one tensor for both")
            continue
        if cfg.tie_embeddings and key in HF_TIED_TO_EMBEDDING[arch]:
            if hf[key].shape != emb.shape or not torch.equal(hf[key], emb):
                raise LmkitError(f"{source}: {key} differs from the word embedding although the config ties them")
            continue
        if arch == ROFORMER.architecture and key == ROFORMER_TABLE:
            t = hf[key]
            ref = roformer_sinusoid_table(t.shape[0], cfg.head_dim) if t.dim() == 2 else None
            if ref is None or t.shape != ref.shape or not torch.allclose(t.to(torch.float32), ref, atol=1e-5):
                raise LmkitError(f"{source}: {key} is not RoFormer's sinusoid table; lmkit computes rotary positions "
                                 "with theta 10000 and cannot hold another table")
            continue
        if fam == "encdec" and key == "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight":
            continue  # transformers ignores this key too: cross-attention has no position bias
        raise LmkitError(f"{source}: tensor {key!r} has no place in lmkit's {fam} "
                         f"(a layer or bias lmkit does not have)")
    orders = row_orders(cfg)
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in names.items():
        t = hf[theirs].to(torch.float32)
        if ours in orders:
            if t.shape[0] != len(orders[ours]):
                raise LmkitError(f"{source}: {theirs} has {t.shape[0]} rows, the config needs {len(orders[ours])}")
            t = t.index_select(0, torch.argsort(orders[ours]))  # back to lmkit's row order
        out[ours] = t.contiguous()
    return out


def _legacy_renames(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old BERT files name LayerNorm parameters gamma/beta (TensorFlow's names): rename explicitly."""
    out = {}
    for k, v in hf.items():
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


def _ignorable(key: str) -> bool:
    """Keys that hold no weights (rotary inv_freq, position ids) or parts a masked LM does not use."""
    return (key.endswith("rotary_emb.inv_freq") or key.endswith("embeddings.position_ids")
            or key.startswith(("bert.pooler.", "roformer.pooler.", "cls.seq_relationship.")))


def is_lmkit_checkpoint(folder: Path) -> bool:
    """True if ``folder`` is an lmkit checkpoint (what import-hf may replace with --overwrite)."""
    from lmkit.models.checkpoint import is_checkpoint

    return is_checkpoint(folder)


# --------------------------------------------------------------------------- config


def _need(ok: bool, source: str, message: str) -> None:
    if not ok:
        raise LmkitError(f"{source}: {message}")


def lmkit_config_from_hf(hf: dict[str, Any], source: str, max_seq_len: int | None = None,
                         tokenizer_max_len: int | None = None) -> ModelConfig:
    """The lmkit ModelConfig equal to transformers config ``hf``, or an error naming what has no equivalent."""
    from lmkit.config import ModelConfig

    archs = hf.get("architectures") or []
    target = next((TARGET_OF_ARCHITECTURE[a] for a in archs if a in TARGET_OF_ARCHITECTURE), None)
    if target is None:
        if archs:
            supported = ", ".join(TARGET_OF_ARCHITECTURE)
            raise LmkitError(f"{source}: architecture {', '.join(map(str, archs))} is not supported "
                             f"(lmkit imports {supported})")
        target = TARGET_OF_MODEL_TYPE.get(str(hf.get("model_type")))
        if target is None:
            raise LmkitError(f"{source}: model_type {hf.get('model_type')!r} is not supported "
                             f"(lmkit imports {', '.join(TARGET_OF_ARCHITECTURE)})")
    _need(hf.get("model_type", target.model_type) == target.model_type, source,
          f"model_type {hf.get('model_type')!r} does not match {target.architecture}")
    fam = target.family

    def geti(key: str, default: int | None = None) -> int:
        v = hf.get(key, default)
        _need(isinstance(v, int) and not isinstance(v, bool) and v > 0, source, f"{key} must be a positive integer, got {v!r}")
        return int(v)

    if fam == "decoder":
        d, heads = geti("hidden_size"), geti("num_attention_heads")
        kv = hf.get("num_key_value_heads") or heads
        _need(kv == heads, source, f"grouped-query attention (num_key_value_heads {kv} != num_attention_heads "
                                   f"{heads}) has no lmkit equivalent: lmkit's attention has one key/value head per head")
        _need(d % heads == 0, source, f"hidden_size {d} is not divisible by num_attention_heads {heads}")
        hd = hf.get("head_dim") or d // heads
        _need(hd == d // heads, source, f"head_dim {hd} != hidden_size / num_attention_heads ({d // heads}); "
                                        "lmkit's heads split d_model evenly")
        _need(hf.get("hidden_act", "silu") == "silu", source,
              f"hidden_act {hf.get('hidden_act')!r}: lmkit's decoder uses SwiGLU (silu)")
        _need(not hf.get("attention_bias", False), source, "attention_bias is true: lmkit's decoder has no biases")
        _need(not hf.get("mlp_bias", False), source, "mlp_bias is true: lmkit's decoder has no biases")
        _need(hf.get("pretraining_tp", 1) in (None, 1), source, "pretraining_tp != 1 is not supported")
        rope = hf.get("rope_parameters") or {}
        scaling = hf.get("rope_scaling")
        rope_type = (rope.get("rope_type") or rope.get("type") or "default") if isinstance(rope, dict) else "default"
        _need(rope_type == "default" and not scaling, source,
              f"rope scaling ({scaling or rope_type}) has no lmkit equivalent: lmkit uses plain rotary positions")
        theta = (rope.get("rope_theta") if isinstance(rope, dict) else None) or hf.get("rope_theta") or 10000.0
        _need(not hf.get("sliding_window"), source, "sliding-window attention is not supported")
        cfg = ModelConfig(family="decoder", vocab_size=geti("vocab_size"), d_model=d,
                          n_layers=geti("num_hidden_layers"), n_heads=heads, d_ff=geti("intermediate_size"),
                          max_seq_len=max_seq_len or geti("max_position_embeddings", 2048), pos_encoding="rotary",
                          rope_theta=float(theta), norm_eps=float(hf.get("rms_norm_eps", 1e-6)), dropout=0.0,
                          tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    elif fam == "encoder":
        _need(hf.get("hidden_act", "gelu") == "gelu", source,
              f"hidden_act {hf.get('hidden_act')!r}: lmkit's encoder uses exact GELU (\"gelu\")")
        rotary = target is ROFORMER
        if rotary:  # RoFormer: BERT blocks with rotary positions (theta 10000) and no position table
            _need(not hf.get("rotary_value", False), source,
                  "rotary_value is true: lmkit rotates queries and keys only, not values")
            _need(hf.get("embedding_size") in (None, hf.get("hidden_size")), source,
                  f"embedding_size {hf.get('embedding_size')} != hidden_size {hf.get('hidden_size')}: lmkit's "
                  "encoder has no embedding projection")
        else:
            _need(hf.get("position_embedding_type", "absolute") == "absolute", source,
                  f"position_embedding_type {hf.get('position_embedding_type')!r}: lmkit's BERT layout has "
                  "absolute learned positions only")
        from lmkit.models.encoder import TYPE_VOCAB_SIZE

        _need(hf.get("type_vocab_size", 2) == TYPE_VOCAB_SIZE, source,
              f"type_vocab_size {hf.get('type_vocab_size')} != {TYPE_VOCAB_SIZE} (lmkit's encoder has two segments)")
        _need(not hf.get("is_decoder", False) and not hf.get("add_cross_attention", False), source,
              f"a {target.model_type} model used as a decoder (is_decoder / add_cross_attention) is not supported")
        d, heads = geti("hidden_size"), geti("num_attention_heads")
        _need(d % heads == 0, source, f"hidden_size {d} is not divisible by num_attention_heads {heads}")
        if rotary:
            _need((d // heads) % 2 == 0, source, f"head size {d // heads} is odd: rotary positions need an even one")
        n_pos = geti("max_position_embeddings", 1536 if rotary else 512)
        if max_seq_len is not None and not rotary:
            _need(max_seq_len <= n_pos, source, f"--max-seq-len {max_seq_len} exceeds the {n_pos} learned positions")
        cfg = ModelConfig(family="encoder", vocab_size=geti("vocab_size"), d_model=d,
                          n_layers=geti("num_hidden_layers"), n_heads=heads, d_ff=geti("intermediate_size"),
                          max_seq_len=max_seq_len or n_pos, pos_encoding="rotary" if rotary else "learned",
                          rope_theta=10000.0,
                          norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
                          dropout=float(hf.get("hidden_dropout_prob", 0.1)),
                          tie_embeddings=bool(hf.get("tie_word_embeddings", True)))
    else:
        from lmkit.models.encdec import REL_BUCKETS, REL_MAX_DISTANCE

        ffp = hf.get("feed_forward_proj", "relu")
        _need(ffp == "relu", source, f"feed_forward_proj {ffp!r}: lmkit's encoder-decoder is T5 v1.0 (ReLU MLP, "
                                     "not gated as in T5 v1.1 / Flan-T5)")
        _need(hf.get("relative_attention_num_buckets", 32) == REL_BUCKETS, source,
              f"relative_attention_num_buckets must be {REL_BUCKETS}")
        _need(hf.get("relative_attention_max_distance", 128) == REL_MAX_DISTANCE, source,
              f"relative_attention_max_distance must be {REL_MAX_DISTANCE}")
        d, heads = geti("d_model"), geti("num_heads")
        _need(d % heads == 0 and hf.get("d_kv", d // heads) == d // heads, source,
              f"d_kv {hf.get('d_kv')} != d_model / num_heads ({d // heads if d % heads == 0 else '?'}): lmkit's "
              "heads split d_model evenly")
        # T5 v1.0 ties the head to the embedding and scales decoder states by d_model^-0.5; lmkit does
        # exactly that when tied. A head without the scaling (transformers 5 writes tie_word_embeddings:
        # true with scale_decoder_outputs: false for such a model) becomes lmkit's untied head, filled
        # from the file's lm_head or, when the file has none, from the embedding it is tied to.
        tie = bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False))
        n_enc = geti("num_layers")
        n_dec = hf.get("num_decoder_layers") or n_enc
        cfg = ModelConfig(family="encdec", vocab_size=geti("vocab_size"), d_model=d, n_layers=n_enc, n_heads=heads,
                          d_ff=geti("d_ff"), n_decoder_layers=None if n_dec == n_enc else int(n_dec),
                          max_seq_len=max_seq_len or hf.get("n_positions") or tokenizer_max_len or 512,
                          pos_encoding="rotary",  # unused by the T5 layout (relative position bias)
                          norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)),
                          dropout=float(hf.get("dropout_rate", 0.1)), tie_embeddings=tie)
    try:
        cfg.validate()
    except LmkitError as e:
        raise LmkitError(f"{source}: {e}") from None
    return cfg


# --------------------------------------------------------------------------- the folder


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers folder: model.safetensors, sharded safetensors, or pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file

    def safe(p: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises its own error types on corrupt files
            raise LmkitError(f"{p}: cannot read weights ({e})") from None

    def pickle_free(p: Path) -> dict[str, torch.Tensor]:
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and plain containers
            raise LmkitError(f"{p}: cannot read weights safely ({str(e).splitlines()[0][:200]})") from None

    if (folder / "model.safetensors").is_file():
        return safe(folder / "model.safetensors")
    for index_name, reader in (("model.safetensors.index.json", safe), ("pytorch_model.bin.index.json", pickle_free)):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as e:
                raise LmkitError(f"{index}: unreadable shard index ({e})") from None
            out: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if Path(shard).name != shard:
                    raise LmkitError(f"{index}: shard name {shard!r} is not a plain file name")
                out.update(reader(folder / shard))
            return out
    if (folder / "pytorch_model.bin").is_file():
        return pickle_free(folder / "pytorch_model.bin")
    raise LmkitError(f"{folder}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)")


def import_hf(src: str | Path, out: str | Path, overwrite: bool = False, tokenizer: str | Path | None = None,
              no_tokenizer: bool = False, max_seq_len: int | None = None) -> dict[str, Any]:
    """Read a transformers folder into an lmkit checkpoint at ``out``; returns a report."""
    import torch

    from lmkit.models import build_model, count_parameters
    from lmkit.models.checkpoint import save_checkpoint
    from lmkit.tokenizer import Tokenizer

    folder = Path(src)
    if not folder.is_dir():
        raise LmkitError(f"{folder}: not a folder (give the folder that holds config.json and the weights)")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise LmkitError(f"{folder}: no config.json")
    try:
        hf_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LmkitError(f"{cfg_path}: unreadable ({e})") from None
    if hf_cfg.get("format") == "lmkit-checkpoint/1":
        raise LmkitError(f"{folder}: is already an lmkit checkpoint (nothing to import)")
    if max_seq_len is not None and max_seq_len <= 0:
        raise LmkitError(f"--max-seq-len must be positive, got {max_seq_len}")
    out = Path(out)
    check_out_dir(out, overwrite, [folder, *([tokenizer] if tokenizer else [])], ours=is_lmkit_checkpoint,
                  kind="checkpoint")

    tok_max = None
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            v = json.loads(tc.read_text(encoding="utf-8")).get("model_max_length")
            tok_max = int(v) if isinstance(v, int) and 0 < v < 1_000_000 else None
        except (OSError, ValueError):
            tok_max = None
    cfg = lmkit_config_from_hf(hf_cfg, str(cfg_path), max_seq_len, tok_max)

    tok: Tokenizer | None = None
    if not no_tokenizer:
        tok_path = Path(tokenizer) if tokenizer else folder / "tokenizer.json"
        if tokenizer is None and not tok_path.is_file():
            raise LmkitError(f"{folder}: no tokenizer.json; lmkit needs its tokenizer to train or evaluate "
                             "(pass --tokenizer FILE with an lmkit tokenizer of the same vocabulary, or "
                             "--no-tokenizer to import the weights alone)")
        try:
            tok = Tokenizer.load(tok_path)
        except LmkitError as e:
            raise LmkitError(f"{e}. lmkit's pipeline needs <pad>, <s>, </s>, <unk>, [MASK], <extra_id_0..99> at ids "
                             "0..104: pass --tokenizer FILE with such a tokenizer of the same vocabulary, or "
                             "--no-tokenizer to import the weights alone") from None
        if tok.vocab_size != cfg.vocab_size:
            raise LmkitError(f"{tok_path}: tokenizer has {tok.vocab_size} tokens but the model's vocabulary is "
                             f"{cfg.vocab_size}; they must match (or pass --no-tokenizer)")

    weight_files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    hashes = {p.name: sha256_file(p) for p in weight_files}
    record = _export_record(folder, hashes.get("model.safetensors"))
    if record is not None:
        cfg = _original_config(record, cfg, max_seq_len)

    weights = read_hf_weights(folder)
    if cfg.family == "encdec" and not cfg.tie_embeddings and "lm_head.weight" not in weights \
            and "shared.weight" in weights:
        weights["lm_head.weight"] = weights["shared.weight"].clone()  # transformers ties a missing head
    state = from_hf_state(weights, cfg, str(folder))
    if "pos_emb.weight" in state and state["pos_emb.weight"].shape[0] > cfg.max_seq_len:
        state["pos_emb.weight"] = state["pos_emb.weight"][: cfg.max_seq_len].clone()
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    if [m for m in missing if m in params] or unexpected:
        raise LmkitError(f"{folder}: weights do not fit the derived config (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    for name, t in model.state_dict().items():
        if name in state and t.shape != state[name].shape:
            raise LmkitError(f"{folder}: {name} has shape {tuple(state[name].shape)}, config needs {tuple(t.shape)}")

    kept_history = record is not None
    meta: dict[str, Any] = dict(record.get("meta") or {}) if record is not None else {}
    meta.update({
        "family": cfg.family, "objective": cfg.objective, "params": count_parameters(model),
        "imported_from": {
            "path": str(folder.resolve()), "architecture": target_of(cfg).architecture,
            "model_type": hf_cfg.get("model_type"), "transformers_version": hf_cfg.get("transformers_version"),
            "weights_sha256": hashes, "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "training_record": "kept from the lmkit export (weights unchanged)" if kept_history else "not recorded",
        },
    })
    if tok is not None:
        meta["tokenizer_sha256"] = tok.sha256
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # empty (check_out_dir refused anything else but a checkpoint save_checkpoint replaces)
    with torch.no_grad():
        path = save_checkpoint(out, model, cfg, tokenizer=tok, meta=meta)
    return {"checkpoint": str(path), "family": cfg.family, "architecture": target_of(cfg).architecture,
            "params": meta["params"], "tokenizer": tok is not None, "training_record_kept": kept_history,
            "model": {k: getattr(cfg, k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "ffn_width",
                                                   "max_seq_len", "tie_embeddings")}}


def _export_record(folder: Path, weights_sha256: str | None) -> dict[str, Any] | None:
    """lmkit_meta.json of an lmkit export whose model.safetensors is unchanged (same sha256), else None."""
    f = folder / LMKIT_META_FILE
    if weights_sha256 is None or not f.is_file():
        return None
    try:
        record = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        return None
    return record if record.get("model_safetensors_sha256") == weights_sha256 else None


def _original_config(record: dict[str, Any], derived: ModelConfig, max_seq_len: int | None) -> ModelConfig:
    """The exported checkpoint's own ModelConfig when it agrees with the transformers config.

    Fields transformers has no slot for (encdec's context and target lengths, its unused position
    setting) then come back exactly as they were; any disagreement keeps the derived config.
    """
    import dataclasses

    from lmkit.config import model_config_from_dict

    try:
        orig = model_config_from_dict(record.get("lmkit_model") or {})
    except LmkitError:
        return derived
    same = ("family", "vocab_size", "d_model", "n_layers", "n_heads", "ffn_width", "tie_embeddings", "norm_eps")
    if any(getattr(orig, k) != getattr(derived, k) for k in same):
        return derived
    if (orig.n_decoder_layers or orig.n_layers) != (derived.n_decoder_layers or derived.n_layers):
        return derived
    if orig.family == "decoder" and (orig.pos_encoding, orig.rope_theta) != (derived.pos_encoding, derived.rope_theta):
        return derived
    if orig.family == "encoder" and (orig.pos_encoding != derived.pos_encoding or orig.rope_theta != derived.rope_theta
                                     or orig.max_seq_len < derived.max_seq_len):
        return derived
    return dataclasses.replace(orig, max_seq_len=max_seq_len) if max_seq_len else orig
