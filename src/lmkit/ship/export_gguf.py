"""Export a decoder as one GGUF file for llama.cpp: ``lmkit export CKPT --format gguf --out FILE.gguf``.

What this module owns:

* :func:`export_gguf` writes a single ``.gguf`` file (with the ``gguf`` package, llama.cpp's own
  writer) holding the weights, the hyper-parameters llama.cpp reads, and the tokenizer, so that
  llama.cpp (``llama-cli``, ``llama-server``, ``llama-cpp-python``) loads and runs it with no other file.
* Which lmkit layouts map, and to which llama.cpp architecture (:func:`gguf_arch`): the layout's
  transformers class (``lmkit.models.hf``) decides it, so a layout maps exactly or not at all:
  ``LlamaForCausalLM`` (lmkit's own decoder, imported SmolLM2/TinyLlama/Llama: RMSNorm, SwiGLU,
  rotary, grouped-query attention, no biases or biases everywhere, linear or Llama-3 rope scaling
  written as llama.cpp's ``rope_freqs`` factors) -> ``llama``; ``Qwen2ForCausalLM`` (q/k/v biases,
  no rope scaling) -> ``qwen2``; ``GPT2LMHeadModel`` with tanh-GELU -> ``gpt2``. Anything else
  (GPT-NeoX, BLOOM, exact-GELU GPT-2, encoders, encoder-decoders) is refused in one line naming why.
* The tensors (:func:`gguf_tensors`): the class adapter's rules give each lmkit tensor its
  transformers name (q/k/v fused for GPT-2), ``gguf.get_tensor_name_map`` gives the GGUF name
  (``token_embd``, ``blk.N.attn_q``, ``output_norm``...), matrices stay (out, in) as torch holds
  them (GPT-2's Conv1D transposition is transformers' storage, not the model's). For ``llama``, the
  query and key rows of each head are permuted from lmkit's "rotate half" pairs (i, i + d/2) to
  llama.cpp's adjacent pairs (2i, 2i + 1) (:func:`rope_pairs_adjacent`; :func:`rope_pairs_halves`
  undoes it), as llama.cpp's ``convert_hf_to_gguf.py`` does; ``qwen2`` and ``gpt2`` need none.
  A tied head is written once (``token_embd``; llama.cpp reuses it as the output).
* Number formats follow the checkpoint: float32 -> F32; ``lmkit quantize --to fp16|bf16`` -> F16 |
  BF16 matrices; ``--to int8`` -> Q8_0. Norms, biases and position tables are always F32 (llama.cpp
  reads them so). Q8_0 is blocks of 32 int8 with one fp16 scale; lmkit's int8 is int8 codes with one
  fp32 scale per row, so a row maps onto its blocks by keeping the codes and giving every block the
  row's scale rounded to fp16 (:func:`q8_0_from_int8`): exact codes, a scale within half an fp16
  step (relative 2^-11). Where the formats do not agree (a row length not a multiple of 32, a scale
  outside fp16's normal range) the tensor is written F32 with the int8 values ``q · scale``, and the
  report names it. ``--dequantize`` writes every weight F32.
* The tokenizer (:func:`gguf_vocab`): byte-level BPE (lmkit's own and GPT-2's ``ByteLevel`` regex ->
  ``tokenizer.ggml.pre`` ``gpt-2``; Llama-3's split with ``ignore_merges`` -> ``llama-bpe``; Qwen2's
  -> ``qwen2``; SmolLM's digits + ByteLevel -> ``smollm``; none with ``add_prefix_space``, which
  llama.cpp never adds) as ``tokenizer.ggml.model`` ``gpt2`` with tokens, token types and merges;
  SentencePiece-style BPE with byte fallback (TinyLlama, Llama 2) as ``llama`` with each token's
  score minus the rank of the merge that makes it (llama.cpp merges the best score first, the BPE
  the earliest merge). Special tokens are CONTROL, ``<0xNN>`` BYTE, embedding rows past the
  tokenizer ``[PADn]`` UNUSED. BOS/EOS/PAD/UNK ids and ``add_bos_token`` are the tokenizer's roles
  (``lmkit.token_roles``). An NFC normalizer is accepted (llama.cpp normalizes nothing: the same
  ids for text already in NFC); any other normalizer or pre-tokenizer is refused, naming it.
* The output file (``lmkit.files.check_out_file``): refused over an input, an existing file needs
  ``--overwrite`` and then only a GGUF file (its magic) is replaced; written to a temporary sibling
  and renamed. lmkit's model config and training record ride along as ``lmkit.*`` string keys.

The transformers export is ``lmkit.ship.export_hf``; the class facts are ``lmkit.models.hf``'s.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.files import check_out_file, chmod_default
from lmkit.models.hf import adapter_or_error

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lmkit.config import ModelConfig
    from lmkit.models.hf_adapters.base import HFAdapter
    from lmkit.tokenizer import Tokenizer

#: transformers class of a layout -> llama.cpp architecture (``general.architecture``)
ARCHS = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "GPT2LMHeadModel": "gpt2"}
GGUF_MAGIC = b"GGUF"
QK8_0 = 32  # values per Q8_0 block
LMKIT_CONFIG_KEY, LMKIT_META_KEY = "lmkit.model_config", "lmkit.checkpoint_meta"
# transformers' Split patterns of the byte-level BPEs llama.cpp implements, by tokenizer.ggml.pre
_LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLIT_PRE = {_LLAMA3: "llama-bpe", _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}"): "qwen2"}
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}  # gguf.LlamaFileType: general.file_type


def is_gguf(path: Path) -> bool:
    """True if ``path`` is a file that starts with GGUF's magic (what ``--overwrite`` may replace)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


# --------------------------------------------------------------------------- layouts and tensors


def gguf_arch(cfg: ModelConfig, where: str = "") -> tuple[HFAdapter, str]:
    """The class adapter of ``cfg`` and its llama.cpp architecture, or one line saying why there is none."""
    at = f"{where}: " if where else ""
    if cfg.family != "decoder":
        raise LmkitError(f"{at}GGUF export is for decoders (llama.cpp runs causal LMs); this is an {cfg.family}")
    adapter = adapter_or_error(cfg, where)
    arch = ARCHS.get(adapter.target.architecture)
    if arch is None:
        raise LmkitError(
            f"{at}GGUF export maps the Llama, Qwen2 and GPT-2 layouts to llama.cpp exactly; this decoder has "
            f"{adapter.target.architecture}'s layout (export it with --format hf instead)"
        )
    if arch == "gpt2" and cfg.activation != "gelu_tanh":
        raise LmkitError(f"{at}llama.cpp's gpt2 uses tanh-GELU; this model has model.activation {cfg.activation!r}")
    if arch == "qwen2" and cfg.rope_scaling.type != "none":
        raise LmkitError(
            f"{at}llama.cpp's qwen2 reads no rope factors; model.rope_scaling is {cfg.rope_scaling.type!r}"
        )
    return adapter, arch


def rope_pairs_adjacent(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Query/key rows (or biases) from lmkit's rotary pairs (i, i + d/2) of each head to llama.cpp's
    adjacent pairs (2i, 2i + 1): per head, row order (2, d/2) -> (d/2, 2)."""
    shape = t.shape
    return t.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).transpose(1, 2).reshape(shape)


def rope_pairs_halves(t: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of :func:`rope_pairs_adjacent` (a GGUF's query/key rows back to lmkit's order)."""
    shape = t.shape
    return t.reshape(heads, shape[0] // heads // 2, 2, *shape[1:]).transpose(1, 2).reshape(shape)


def rope_factors(cfg: ModelConfig) -> torch.Tensor | None:
    """llama.cpp's ``rope_freqs`` (rd/2,): each rotary frequency is divided by its factor, giving
    lmkit's scaled frequencies (``lmkit.models.positions.rope_inv_freq``); None without scaling."""
    from lmkit.models.positions import rope_inv_freq

    if cfg.rope_scaling.type == "none":
        return None
    plain = rope_inv_freq(cfg.head_dim, cfg.rope_theta)
    return plain / rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)


def gguf_names(cfg: ModelConfig, where: str = "") -> dict[str, tuple[str, ...]]:
    """GGUF tensor name -> the lmkit tensors it holds (several: q, k, v concatenated along rows), by the
    class rules and ``gguf.get_tensor_name_map``; a tied head has no entry of its own."""
    import gguf

    adapter, arch = gguf_arch(cfg, where)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.n_layers)
    out: dict[str, tuple[str, ...]] = {}
    for rule in adapter.rules(cfg):
        if rule.kind not in ("same", "transposed", "fused", "fused_transposed"):  # none in the ARCHS layouts
            raise LmkitError(f"{where}: no GGUF mapping for {rule.theirs} ({rule.kind})")
        name = names.get_name(rule.theirs, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise LmkitError(f"{where}: gguf has no {arch} tensor for {rule.theirs}")
        out[name] = rule.ours
    return out


def gguf_tensors(cfg: ModelConfig, state: dict[str, torch.Tensor], where: str = "") -> dict[str, torch.Tensor]:
    """GGUF name -> tensor of lmkit's ``state`` (tensors by lmkit name, each (out, ...) in torch's row
    order): :func:`gguf_names`, query/key rows permuted for ``llama``, and llama's ``rope_freqs``
    where the model scales its rotary frequencies. Only rows move, so a state of int8 codes with each
    row's scale appended as a last column maps the same way."""
    import torch

    _, arch = gguf_arch(cfg, where)
    out: dict[str, torch.Tensor] = {}
    for name, ours in gguf_names(cfg, where).items():
        t = torch.cat([state[n] for n in ours]) if len(ours) > 1 else state[ours[0]]
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            t = rope_pairs_adjacent(t, cfg.n_heads if ".attn_q." in name else cfg.kv_heads)
        out[name] = t.detach().cpu()
    factors = rope_factors(cfg)
    if factors is not None:  # llama only (gguf_arch refuses scaling elsewhere)
        out["rope_freqs.weight"] = factors
    return out


def q8_0_from_int8(codes: torch.Tensor, scale: torch.Tensor) -> np.ndarray | None:
    """Q8_0 blocks (rows, n/32 · 34 bytes) holding int8 ``codes`` (rows, n) with each row's fp32
    ``scale`` (rows,) rounded to fp16 in all its blocks; None where the formats do not agree (n not a
    multiple of 32, or a scale outside fp16's normal range, where rounding would move it by more
    than half an fp16 step)."""
    import numpy as np

    rows, n = codes.shape
    s = scale.reshape(-1).double().numpy()
    if n % QK8_0 or not np.all((np.abs(s) >= 2.0**-14) & (np.abs(s) <= 65504.0)):
        return None
    d = np.repeat(s.astype(np.float16)[:, None], n // QK8_0, axis=1)  # (rows, blocks)
    q = codes.numpy().astype(np.int8).reshape(rows, n // QK8_0, QK8_0)
    blocks = np.concatenate([d[..., None].view(np.uint8), q.view(np.uint8)], axis=-1)  # (rows, blocks, 34)
    return np.ascontiguousarray(blocks.reshape(rows, -1))


# --------------------------------------------------------------------------- tokenizer


def _pre_name(spec: dict[str, Any], where: str) -> str:
    """``tokenizer.ggml.pre`` of a byte-level BPE's tokenizer.json, or one line saying why none fits."""
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") != "NFC":
        raise LmkitError(f"{where}: llama.cpp applies no {norm.get('type')} normalizer; GGUF export refuses it")
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if any(p.get("type") == "ByteLevel" and p.get("add_prefix_space") for p in parts):
        raise LmkitError(f"{where}: this BPE puts a space before every text (add_prefix_space); llama.cpp's does not")
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        pattern = (parts[0].get("pattern") or {}).get("Regex")
        if pattern in SPLIT_PRE and parts[0].get("behavior") == "Isolated":
            name = SPLIT_PRE[pattern]
            if name == "llama-bpe" and not spec.get("model", {}).get("ignore_merges"):
                raise LmkitError(
                    f"{where}: llama.cpp's llama-bpe takes a word that is a token whole (ignore_merges, as Llama 3's "
                    "tokenizer.json says); this BPE merges it: no llama.cpp tokenizer equals it"
                )
            return name
    raise LmkitError(
        f"{where}: llama.cpp has no pre-tokenizer known to equal this one ({' + '.join(map(str, kinds)) or 'none'}); "
        "GGUF export knows GPT-2's, Llama-3's, Qwen2's and SmolLM's"
    )


def gguf_vocab(tok: Tokenizer, rows: int, where: str = "") -> dict[str, Any]:
    """The GGUF tokenizer of ``tok`` for an embedding of ``rows`` rows: ``model`` (gpt2 | llama),
    ``pre``, ``tokens``, ``types``, ``merges`` and (llama) ``scores`` and ``space_prefix``."""
    from gguf import TokenType

    from lmkit.bpe_bytes import token_kind

    spec = json.loads(tok.to_str())
    model = spec.get("model", {})
    kind = token_kind(spec)
    if model.get("type") != "BPE" or kind not in ("byte_level", "metaspace"):
        raise LmkitError(
            f"{where}: GGUF export writes byte-level BPE and SentencePiece-style BPE tokenizers; this one is "
            f"{model.get('type')} ({kind})"
        )
    if kind == "metaspace" and not model.get("byte_fallback"):
        raise LmkitError(f"{where}: a SentencePiece-style BPE without byte fallback has no llama.cpp tokenizer")
    if tok.vocab_size > rows:
        raise LmkitError(f"{where}: tokenizer has {tok.vocab_size} tokens but the model only {rows} rows")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if any(len(m.split(" ")) != 2 for m in merges):
        raise LmkitError(f"{where}: a merge holds a space; GGUF stores merges as 'left right' text")
    added = {i: t.special for i, t in tok.hf.get_added_tokens_decoder().items()}
    tokens, types = [], []
    for i in range(rows):
        text = tok.hf.id_to_token(i) if i < tok.vocab_size else None
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(text)
            types.append(TokenType.CONTROL if added[i] else TokenType.USER_DEFINED)
        else:
            byte = kind == "metaspace" and len(text) == 6 and text.startswith("<0x") and text.endswith(">")
            tokens.append(text)
            types.append(TokenType.BYTE if byte else TokenType.NORMAL)
    out: dict[str, Any] = {"tokens": tokens, "types": [int(t) for t in types], "merges": merges}
    if kind == "byte_level":
        return {**out, "model": "gpt2", "pre": _pre_name(spec, where)}
    rank: dict[str, int] = {}
    for r, m in enumerate(merges):
        rank.setdefault(m.replace(" ", ""), r)  # a token's score: minus the first merge that makes it
    scores = [-float(rank.get(t, 0)) if ty == TokenType.NORMAL else 0.0 for t, ty in zip(tokens, types)]
    return {**out, "model": "llama", "pre": "default", "scores": scores, "space_prefix": tok.space_before_text}


def _write_vocab(w: Any, tok: Tokenizer, v: dict[str, Any]) -> None:
    """The tokenizer keys: :func:`gguf_vocab`'s ``v`` and the roles of ``tok``."""
    w.add_tokenizer_model(v["model"])
    w.add_tokenizer_pre(v["pre"])
    w.add_token_list(v["tokens"])
    w.add_token_types(v["types"])
    if v["model"] == "llama":
        w.add_token_scores(v["scores"])
        w.add_add_space_prefix(v["space_prefix"])
    if v["merges"]:
        w.add_token_merges(v["merges"])
    r = tok.roles
    for add, i in ((w.add_bos_token_id, r.bos), (w.add_pad_token_id, r.pad), (w.add_unk_token_id, r.unk)):
        if i is not None:
            add(i)
    if r.eos:
        w.add_eos_token_id(r.eos[0])
        if len(r.eos) > 1:
            w.add_eot_token_id(r.eos[1])  # llama.cpp stops on eos, eot and the end tokens it recognises
    w.add_add_bos_token(r.adds_bos)
    w.add_add_eos_token(False)


# --------------------------------------------------------------------------- export


def _hparams(w: Any, cfg: ModelConfig, arch: str) -> None:
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.d_model)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.ffn_width)
    w.add_head_count(cfg.n_heads)
    if arch == "gpt2":
        w.add_layer_norm_eps(cfg.norm_eps)
        return
    w.add_head_count_kv(cfg.kv_heads)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)


def _weights(
    model: Any, cfg: ModelConfig, fmt: str, where: str
) -> tuple[dict[str, tuple[np.ndarray, Any]], list[str], float]:
    """GGUF name -> (data, raw dtype or None) of ``model`` in format ``fmt`` (f32 | f16 | bf16 | q8_0);
    the matrices of an int8 model written F32 (where Q8_0 and lmkit's int8 disagree); the largest
    relative change of an int8 scale rounded to fp16."""
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    from lmkit.models.int8 import Int8Embedding, Int8Linear

    state = model.state_dict()
    int8 = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (Int8Linear, Int8Embedding))}
    rows = {k: v.float() for k, v in state.items() if not k.endswith((".qweight", ".scale"))}
    for n in int8:  # codes with each row's scale as a last column: every mapping moves whole rows
        base = n.removesuffix(".weight")
        rows[n] = torch.cat([state[f"{base}.qweight"].float(), state[f"{base}.scale"].float()], dim=1)
    sources = gguf_names(cfg, where)
    out: dict[str, tuple[np.ndarray, Any]] = {}
    as_f32: list[str] = []
    worst = 0.0
    for name, t in gguf_tensors(cfg, rows, where).items():
        # llama.cpp reads norms, biases, position tables and rope factors as F32
        matrix = t.dim() == 2 and name.endswith(".weight") and not name.startswith("position_embd")
        if all(n in int8 for n in sources.get(name, ("",))):
            codes, scale = t[:, :-1], t[:, -1]
            blocks = q8_0_from_int8(codes, scale) if matrix else None
            if blocks is not None:
                s = scale.double()
                worst = max(worst, float(((s.half().double() - s).abs() / s.abs()).max()))
                out[name] = (blocks, Q.Q8_0)
                continue
            if matrix:
                as_f32.append(name)
            t = codes * scale[:, None]  # lmkit's int8 values, exactly, as F32
            matrix = False
        data = np.ascontiguousarray(t.float().numpy(), dtype=np.float32)
        if matrix and fmt == "f16":
            out[name] = (data.astype(np.float16), None)
        elif matrix and fmt == "bf16":
            out[name] = (quantize(data, Q.BF16), Q.BF16)
        else:
            out[name] = (data, None)
    return out, as_f32, worst


def export_gguf(ckpt: str | Path, out: str | Path, overwrite: bool = False, dequantize: bool = False) -> dict[str, Any]:
    """Write the GGUF file of decoder checkpoint ``ckpt`` to ``out``; returns a report: ``out``,
    ``architecture`` (llama.cpp's), ``type`` (f32 | f16 | bf16 | q8_0), ``tensors``, ``tokenizer``
    (gpt2 | llama and its pre-tokenizer), ``f32_matrices`` (q8_0 tensors kept F32, and why) and
    ``scale_rounding`` (the largest relative change of an int8 scale rounded to fp16)."""
    import gguf

    from lmkit.config import model_config_from_dict
    from lmkit.models.checkpoint import load_meta, load_model, load_tokenizer, read_config, resolve_checkpoint

    path = resolve_checkpoint(ckpt)
    raw = read_config(path)
    cfg = model_config_from_dict(raw["model"])
    _, arch = gguf_arch(cfg, str(path))  # refuses unmappable layouts before any work
    out = Path(out).expanduser()
    if out.suffix != ".gguf":
        raise LmkitError(f"--out {out}: a GGUF export is one file; give a name ending in .gguf")
    check_out_file(out, overwrite, [ckpt, path], ours=is_gguf, kind="GGUF file")
    if not (path / "tokenizer.json").is_file():
        raise LmkitError(f"{path}: has no tokenizer.json; a GGUF file holds the tokenizer llama.cpp runs with")
    tok = load_tokenizer(path)
    vocab = gguf_vocab(tok, cfg.vocab_size, str(path))  # refuses a tokenizer llama.cpp has no equal for
    quant = raw.get("quantization") or {}
    dtype = quant.get("dtype")
    fmt = "f32" if not quant or dequantize else {"fp16": "f16", "bf16": "bf16", "int8": "q8_0"}.get(str(dtype), "")
    if not fmt:
        raise LmkitError(f"{path}: quantization dtype {dtype!r} has no GGUF format; pass --dequantize for F32")
    if dequantize and quant:  # the quantized values as float32 weights (lmkit.models.int8)
        from lmkit.models import build_model
        from lmkit.models.checkpoint import load_state, load_weights_into
        from lmkit.models.int8 import dequantized_state

        model = build_model(cfg)
        load_weights_into(model, dequantized_state(load_state(path), quant, str(path)), path)
    else:
        model = load_model(path)
    weights, as_f32, worst = _weights(model, cfg, fmt, str(path))

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.tmp-")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(path.name)
        w.add_file_type(_FILE_TYPE[fmt])
        _hparams(w, cfg, arch)
        _write_vocab(w, tok, vocab)
        w.add_string(LMKIT_CONFIG_KEY, json.dumps(raw["model"], sort_keys=True))
        w.add_string(LMKIT_META_KEY, json.dumps(load_meta(path), sort_keys=True, default=str))
        for name, (data, raw_dtype) in weights.items():
            w.add_tensor(name, data, raw_dtype=raw_dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        chmod_default(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "out": str(out),
        "checkpoint": str(path),
        "architecture": arch,
        "type": fmt,
        "dequantized_from": dtype if quant and dequantize else None,
        "tensors": len(weights),
        "tokenizer": f"{vocab['model']} (pre {vocab['pre']}), {len(vocab['tokens'])} tokens",
        "f32_matrices": as_f32,
        "scale_rounding": worst,
        "bytes": out.stat().st_size,
    }


__all__ = [
    "ARCHS",
    "LMKIT_CONFIG_KEY",
    "LMKIT_META_KEY",
    "export_gguf",
    "gguf_arch",
    "gguf_names",
    "gguf_tensors",
    "gguf_vocab",
    "is_gguf",
    "q8_0_from_int8",
    "rope_factors",
    "rope_pairs_adjacent",
    "rope_pairs_halves",
]
