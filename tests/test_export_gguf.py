"""``lmkit export --format gguf`` (issue 31): one llama.cpp file, read back with ``gguf.GGUFReader``.

Every tensor the reader gives back equals lmkit's weight (query/key rows put back in lmkit's order),
the metadata says the model's sizes, the tokenizer's tokens, types and merges round-trip, F16 and Q8_0
dequantise within their formats' steps, and refusals are one line. Where llama.cpp is installed
(``llama_cpp`` importable here, or a Python that has it named by ``LMKIT_LLAMACPP_PYTHON``, such as
the cache ``benchmarks/llamacpp_speed.py`` builds), the file is loaded in llama.cpp and its greedy
tokens and its tokenization must equal lmkit's; otherwise those tests are skipped, saying why.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.infer.generate import generate_ids
from lmkit.infer.sampling import GenerationConfig
from lmkit.model_variants import RopeScaling
from lmkit.models import build_model
from lmkit.models.checkpoint import load_model, save_checkpoint
from lmkit.models.positions import apply_rope, rope_inv_freq, rope_tables
from lmkit.ship.export_gguf import (
    export_gguf,
    gguf_arch,
    gguf_names,
    gguf_vocab,
    rope_pairs_adjacent,
    rope_pairs_halves,
)
from lmkit.ship.quantize import quantize_checkpoint
from lmkit.token_roles import TokenRoles
from lmkit.tokenizer import Tokenizer, train_tokenizer

gguf = pytest.importorskip("gguf")
pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "the cat sat on the mat and the dog sat on the log. " * 3,
    "Hello world, this is lmkit 123! Don't panic; it's fine.",
    "a quick brown fox jumps over the lazy dog while the cat sleeps.",
] * 10
PROBE = "The cat sat on the log, 123 times! Don't  panic:\n\tit's fine. Café"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(TEXTS, vocab_size=420, min_frequency=1, show_progress=False)


def _cfg(vocab: int, **kw: Any) -> ModelConfig:
    base: dict[str, Any] = dict(family="decoder", vocab_size=vocab, d_model=64, n_layers=2, n_heads=4, max_seq_len=64)
    return ModelConfig(**{**base, **kw})


def _ckpt(path: Path, cfg: ModelConfig, tok: Tokenizer | None, seed: int = 0) -> Path:
    """A decoder with weights large enough that its logits have clear winners (greedy tokens do not
    hang on rounding), norms and biases away from their initial values (a swapped name would show)."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if p.dim() == 1 else 0.15 * torch.randn_like(p))
    return save_checkpoint(path, model, cfg, tokenizer=tok, meta={"step": 7, "tokens": 700})


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """Fields, tensors (dequantised to float32, in torch's (out, in) shape) and tensor types of a GGUF file."""
    r = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in r.fields.items()}
    tensors, types = {}, {}
    for t in r.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))
        tensors[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        types[t.name] = t.tensor_type.name
    return fields, tensors, types


def _lmkit_view(cfg: ModelConfig, tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The GGUF tensors under lmkit's names: fused q/k/v split, llama's query/key rows put back."""
    out: dict[str, torch.Tensor] = {}
    llama = gguf_arch(cfg)[1] == "llama"  # qwen2 and gpt2 rotate (or place) as lmkit does
    for name, ours in gguf_names(cfg).items():
        t = torch.from_numpy(tensors[name].copy())
        if llama and (".attn_q." in name or ".attn_k." in name):
            t = rope_pairs_halves(t, cfg.n_heads if ".attn_q." in name else cfg.kv_heads)
        sizes = [cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim]
        for n, part in zip(ours, t.split(sizes) if len(ours) == 3 else [t]):
            out[n] = part
    return out


# --------------------------------------------------------------------------- weights and metadata

LAYOUTS: dict[str, dict[str, Any]] = {
    "llama-tied": {},
    "llama-gqa-untied": {"n_kv_heads": 2, "tie_embeddings": False},
    "llama-biases-head_size": {"bias": "all", "head_size": 8, "n_kv_heads": 1},
    "llama3-rope": {"rope_scaling": RopeScaling("llama3", 8.0, 1.0, 4.0, 16)},
    "qwen2": {"bias": "qkv", "n_kv_heads": 2},
    "gpt2": {"pos_encoding": "learned", "norm": "layer", "bias": "all", "mlp": "plain", "activation": "gelu_tanh"},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_tensor_reads_back_equal_to_lmkits_weight(layout: str, tok: Tokenizer, tmp_path: Path) -> None:
    cfg = _cfg(tok.vocab_size, **LAYOUTS[layout])
    ckpt = _ckpt(tmp_path / "ck", cfg, tok)
    report = export_gguf(ckpt, tmp_path / "m.gguf")
    fields, tensors, types = _read(tmp_path / "m.gguf")
    arch = {"qwen2": "qwen2", "gpt2": "gpt2"}.get(layout, "llama")
    assert report["architecture"] == fields["general.architecture"] == arch
    assert set(types.values()) == {"F32"}
    state = dict(load_model(ckpt).named_parameters())  # a tied head once, as its embedding
    back = _lmkit_view(cfg, tensors)
    assert set(back) == set(state)  # every weight has its GGUF tensor, and nothing else is written
    for name, t in back.items():
        assert torch.equal(t, state[name]), name
    assert ("output.weight" in tensors) == (not cfg.tie_embeddings)  # a tied head is written once
    a = arch
    assert fields[f"{a}.context_length"] == 64 and fields[f"{a}.embedding_length"] == 64
    assert fields[f"{a}.block_count"] == 2 and fields[f"{a}.feed_forward_length"] == cfg.ffn_width
    assert fields[f"{a}.attention.head_count"] == 4
    if arch != "gpt2":
        assert fields[f"{a}.attention.head_count_kv"] == cfg.kv_heads
        assert fields[f"{a}.attention.key_length"] == cfg.head_dim
        assert math.isclose(fields[f"{a}.rope.freq_base"], cfg.rope_theta)
        assert math.isclose(fields[f"{a}.attention.layer_norm_rms_epsilon"], cfg.norm_eps, rel_tol=1e-6)
    else:
        assert math.isclose(fields["gpt2.attention.layer_norm_epsilon"], cfg.norm_eps, rel_tol=1e-6)
    assert json.loads(fields["lmkit.model_config"])["d_model"] == 64
    assert json.loads(fields["lmkit.checkpoint_meta"])["step"] == 7
    if layout == "llama3-rope":  # llama.cpp divides each frequency by its factor: lmkit's scaled ones
        plain = rope_inv_freq(cfg.head_dim, cfg.rope_theta)
        scaled = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        torch.testing.assert_close(plain / torch.from_numpy(tensors["rope_freqs.weight"]), scaled)
        assert (tensors["rope_freqs.weight"] > 1).any()


def test_the_query_key_permutation_turns_rotate_half_into_llama_cpps_adjacent_pairs() -> None:
    """Rows (i, i + d/2) of each head become (2i, 2i + 1): rotating halves and then permuting equals
    permuting and then rotating adjacent pairs (llama.cpp's rope for the llama architecture)."""
    heads, hd, T = 3, 8, 5
    idx = torch.arange(heads * hd, dtype=torch.float32)
    assert rope_pairs_adjacent(idx, heads)[:hd].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert torch.equal(rope_pairs_halves(rope_pairs_adjacent(idx, heads), heads), idx)
    x = torch.randn(1, heads, T, hd)  # (B, H, T, hd)
    cos, sin = rope_tables(hd, T)
    halves = apply_rope(x, cos, sin)
    ang = torch.outer(torch.arange(T, dtype=torch.float32), rope_inv_freq(hd, 10000.0))  # (T, hd/2)
    perm = rope_pairs_adjacent(torch.arange(hd), 1)
    xa = x[..., perm]
    even, odd = xa[..., 0::2], xa[..., 1::2]
    adjacent = torch.stack([even * ang.cos() - odd * ang.sin(), even * ang.sin() + odd * ang.cos()], dim=-1)
    torch.testing.assert_close(halves[..., perm], adjacent.flatten(-2))


# --------------------------------------------------------------------------- number formats


@pytest.mark.parametrize("to,kind", [("fp16", "F16"), ("bf16", "BF16")])
def test_a_16_bit_checkpoint_gives_16_bit_matrices_equal_to_its_weights(
    to: str, kind: str, tok: Tokenizer, tmp_path: Path
) -> None:
    cfg = _cfg(tok.vocab_size, n_kv_heads=2)
    ckpt = _ckpt(tmp_path / "ck", cfg, tok)
    quantize_checkpoint(ckpt, tmp_path / "h", to=to, show_progress=False)
    assert export_gguf(tmp_path / "h", tmp_path / "h.gguf")["type"] == kind.lower()
    _, tensors, types = _read(tmp_path / "h.gguf")
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == kind
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == "F32"  # llama.cpp reads norms F32
    state = load_model(tmp_path / "h").state_dict()
    for name, t in _lmkit_view(cfg, tensors).items():
        assert torch.equal(t, state[name].float()), name  # the checkpoint's 16-bit values, exactly


def test_int8_checkpoint_gives_q8_0_with_lmkits_codes(tok: Tokenizer, tmp_path: Path) -> None:
    cfg = _cfg(tok.vocab_size, n_kv_heads=2)
    ckpt = _ckpt(tmp_path / "ck", cfg, tok)
    quantize_checkpoint(ckpt, tmp_path / "q", to="int8", show_progress=False)
    report = export_gguf(tmp_path / "q", tmp_path / "q.gguf")
    assert report["type"] == "q8_0" and report["f32_matrices"] == []
    assert 0 < report["scale_rounding"] <= 2**-11
    _, tensors, types = _read(tmp_path / "q.gguf")
    assert types["blk.1.ffn_down.weight"] == types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.ffn_norm.weight"] == "F32"
    int8 = load_model(tmp_path / "q")
    back = _lmkit_view(cfg, tensors)
    for name, mod in int8.named_modules():
        if hasattr(mod, "qweight"):
            want = mod.qweight.float() * mod.scale.half().float()  # lmkit's codes, the scale in fp16
            assert torch.equal(back[f"{name}.weight"], want), name
            assert ((back[f"{name}.weight"] - mod.weight).abs() <= 2**-11 * mod.weight.abs()).all()  # half an fp16 step
    report = export_gguf(tmp_path / "q", tmp_path / "dq.gguf", dequantize=True)  # every weight F32: q * scale
    _, tensors, types = _read(tmp_path / "dq.gguf")
    assert report["type"] == "f32" and report["dequantized_from"] == "int8" and set(types.values()) == {"F32"}
    back = _lmkit_view(cfg, tensors)
    assert all(torch.equal(back[f"{n}.weight"], m.weight) for n, m in int8.named_modules() if hasattr(m, "qweight"))
    # a row length that is no multiple of 32 has no Q8_0 blocks: F32 with the int8 values, said in the report
    odd = _cfg(tok.vocab_size, d_model=48, n_heads=4)
    _ckpt(tmp_path / "ck48", odd, tok)
    quantize_checkpoint(tmp_path / "ck48", tmp_path / "q48", to="int8", show_progress=False)
    report = export_gguf(tmp_path / "q48", tmp_path / "q48.gguf")
    _, tensors, types = _read(tmp_path / "q48.gguf")
    assert "blk.0.attn_q.weight" in report["f32_matrices"] and types["blk.0.attn_q.weight"] == "F32"
    assert types["blk.0.ffn_down.weight"] == "Q8_0"  # its rows are d_ff = 128 long
    m = load_model(tmp_path / "q48")
    q_proj = m.get_submodule("blocks.0.attn.q_proj").weight
    assert isinstance(q_proj, torch.Tensor)
    assert torch.equal(_lmkit_view(odd, tensors)["blocks.0.attn.q_proj.weight"], q_proj)


# --------------------------------------------------------------------------- tokenizers


def _foreign(kind: str) -> Tokenizer:
    """Llama-3's byte-level BPE (split regex, BOS added) or TinyLlama's SentencePiece BPE with byte fallback."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    from lmkit.ship.export_gguf import SPLIT_PRE

    if kind == "llama3":
        hf = HFTokenizer(models.BPE(ignore_merges=True))  # as Llama 3's tokenizer.json
        split = pre_tokenizers.Split(Regex(next(iter(SPLIT_PRE))), behavior="isolated")
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        hf.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        hf.train_from_iterator(
            TEXTS, trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False)
        )
        hf.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
        b, e, eot = (hf.token_to_id(t) or 0 for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"))
        return Tokenizer(hf, strict=False, roles=TokenRoles(bos=b, eos=(e, eot), separator=e, adds_bos=True))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    probe = HFTokenizer(models.BPE(unk_token="<unk>"))
    probe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    probe.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=330, limit_alphabet=60, show_progress=False))
    learned = json.loads(probe.to_str())["model"]
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    merges = [
        (m.split(" ", 1)[0], m.split(" ", 1)[1]) if isinstance(m, str) else (m[0], m[1]) for m in learned["merges"]
    ]
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    hf.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    hf.add_special_tokens(["<unk>", "<s>", "</s>"])
    return Tokenizer(hf, strict=False, roles=TokenRoles(bos=1, eos=(2,), unk=0, separator=2, adds_bos=True))


def test_tokenizers_round_trip_tokens_types_merges_and_roles(tok: Tokenizer, tmp_path: Path) -> None:
    T = gguf.TokenType
    for kind, t in (("lmkit", tok), ("llama3", _foreign("llama3")), ("spm", _foreign("spm"))):
        rows = t.vocab_size + 3  # an embedding with padding rows past the tokenizer
        ckpt = _ckpt(tmp_path / kind, _cfg(rows), t)
        export_gguf(ckpt, tmp_path / f"{kind}.gguf")
        f, _, _ = _read(tmp_path / f"{kind}.gguf")
        tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
        assert tokens[: t.vocab_size] == [t.hf.id_to_token(i) for i in range(t.vocab_size)], kind
        assert tokens[t.vocab_size :] == [f"[PAD{i}]" for i in range(t.vocab_size, rows)]
        assert types[t.vocab_size :] == [T.UNUSED] * 3
        assert [types[i] for i in sorted(t.special_ids)] == [T.CONTROL] * len(t.special_ids)
        spec = json.loads(t.to_str())["model"]
        assert f["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
        assert f["tokenizer.ggml.bos_token_id"] == t.bos_id and f["tokenizer.ggml.eos_token_id"] == t.eos_id
        assert f["tokenizer.ggml.add_bos_token"] is t.adds_bos
        want = {"lmkit": ("gpt2", "gpt-2"), "llama3": ("gpt2", "llama-bpe"), "spm": ("llama", "default")}[kind]
        assert (f["tokenizer.ggml.model"], f["tokenizer.ggml.pre"]) == want
        if kind == "llama3":
            assert f["tokenizer.ggml.eot_token_id"] == t.eos_ids[1]
        if kind == "spm":  # bytes are BYTE tokens; a merged token scores minus its merge's rank
            assert [types[3 + b] for b in range(256)] == [T.BYTE] * 256
            first = spec["merges"][0]
            first = first.replace(" ", "") if isinstance(first, str) else "".join(first)
            assert f["tokenizer.ggml.scores"][t.hf.token_to_id(first)] == 0.0
            scores = f["tokenizer.ggml.scores"]
            assert scores[t.hf.token_to_id("".join(spec["merges"][-1]).replace(" ", ""))] < -10


# --------------------------------------------------------------------------- refusals and the output file


def _one_line(e: pytest.ExceptionInfo[LmkitError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_refusals_are_one_line_naming_the_reason(tok: Tokenizer, tmp_path: Path) -> None:
    enc = _ckpt(tmp_path / "enc", _cfg(tok.vocab_size, family="encoder", pos_encoding="learned"), tok)
    with pytest.raises(LmkitError) as e:
        export_gguf(enc, tmp_path / "e.gguf")
    assert "for decoders" in _one_line(e)
    neox = dict(norm="layer", bias="all", mlp="plain", activation="gelu", residual="parallel")
    ckpt = _ckpt(tmp_path / "neox", _cfg(tok.vocab_size, **neox), tok)
    with pytest.raises(LmkitError) as e:
        export_gguf(ckpt, tmp_path / "n.gguf")
    assert "GPTNeoXForCausalLM" in _one_line(e) and "--format hf" in _one_line(e)
    gelu = dict(LAYOUTS["gpt2"], activation="gelu")
    with pytest.raises(LmkitError) as e:
        export_gguf(_ckpt(tmp_path / "g", _cfg(tok.vocab_size, **gelu), tok), tmp_path / "g.gguf")
    assert "tanh-GELU" in _one_line(e)
    with pytest.raises(LmkitError) as e:
        export_gguf(_ckpt(tmp_path / "nt", _cfg(tok.vocab_size), None), tmp_path / "t.gguf")
    assert "no tokenizer.json" in _one_line(e)
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>"], show_progress=False))
    odd = Tokenizer(hf, strict=False, roles=TokenRoles(unk=0))
    with pytest.raises(LmkitError) as e:
        export_gguf(_ckpt(tmp_path / "ws", _cfg(odd.vocab_size), odd), tmp_path / "w.gguf")
    assert "BPE" in _one_line(e)
    for edit, says in (("ignore_merges", "ignore_merges"), ("add_prefix_space", "add_prefix_space")):
        spec = json.loads((_foreign("llama3") if edit == "ignore_merges" else tok).to_str())
        if edit == "ignore_merges":
            spec["model"]["ignore_merges"] = False  # merges a word that is a token whole: not llama-bpe
        else:
            spec["pre_tokenizer"]["add_prefix_space"] = True
        with pytest.raises(LmkitError) as e:
            gguf_vocab(Tokenizer.from_str(json.dumps(spec), strict=False), 1000, "tok.json")
        assert says in _one_line(e)
    good = _ckpt(tmp_path / "ok", _cfg(tok.vocab_size), tok)
    with pytest.raises(LmkitError) as e:
        export_gguf(good, tmp_path / "model.bin")
    assert ".gguf" in _one_line(e)


def test_an_existing_file_is_replaced_only_with_overwrite_and_only_if_gguf(tok: Tokenizer, tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path / "ck", _cfg(tok.vocab_size), tok)
    out = tmp_path / "m.gguf"
    out.write_text("my notes")
    with pytest.raises(LmkitError) as e:
        export_gguf(ckpt, out)
    assert "--overwrite" in _one_line(e)
    with pytest.raises(LmkitError) as e:
        export_gguf(ckpt, out, overwrite=True)
    assert "not a previous lmkit GGUF file" in _one_line(e)
    assert out.read_text() == "my notes"
    out.unlink()
    export_gguf(ckpt, out)
    export_gguf(ckpt, out, overwrite=True)  # a GGUF file is replaced
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    with pytest.raises(LmkitError) as e:
        export_gguf(ckpt, ckpt / "m.gguf")
    assert "inside the input" in _one_line(e)


def test_cli_exports_gguf_and_prints_what_it_wrote(
    tok: Tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmkit.cli import main

    ckpt = _ckpt(tmp_path / "ck", _cfg(tok.vocab_size), tok)
    quantize_checkpoint(ckpt, tmp_path / "q", to="int8", show_progress=False)
    assert main(["export", str(tmp_path / "q"), "--format", "gguf", "--out", str(tmp_path / "q.gguf")]) == 0
    out = capsys.readouterr().out
    assert "llama.cpp llama" in out and "Q8_0" in out and "fp16" in out
    assert main(["export", str(ckpt), "--format", "gguf", "--out", str(tmp_path / "f.gguf"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "f32"


# --------------------------------------------------------------------------- llama.cpp itself

LLAMA_PY = os.environ.get("LMKIT_LLAMACPP_PYTHON") or (sys.executable if importlib.util.find_spec("llama_cpp") else "")
RUN_LLAMA = r"""
import json, sys
import numpy as np
import llama_cpp as L
from llama_cpp import Llama
a = json.loads(sys.argv[1])
llm = Llama(model_path=a["model"], n_ctx=64, n_threads=1, n_batch=64, verbose=False)
llm.eval(a["prompt"])
out = []
for _ in range(a["n"]):
    nxt = int(np.ctypeslib.as_array(L.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).argmax())
    out.append(nxt)
    llm.eval([nxt])
ids = llm.tokenize(a["text"].encode("utf-8"), add_bos=False, special=False)
print(json.dumps({"greedy": out, "ids": ids}))
"""


def _llama_cpp(model: Path, prompt: list[int], n: int, text: str) -> dict[str, Any]:
    arg = json.dumps({"model": str(model), "prompt": prompt, "n": n, "text": text})
    res = subprocess.run([LLAMA_PY, "-c", RUN_LLAMA, arg], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not LLAMA_PY, reason="llama_cpp is not installed (set LMKIT_LLAMACPP_PYTHON to a Python that has it)"
)
@pytest.mark.parametrize(
    "layout,kind",
    [
        ("llama-gqa-untied", "lmkit"),
        ("qwen2", "lmkit"),
        ("gpt2", "lmkit"),
        ("llama3-rope", "spm"),
        ("llama-tied", "llama3"),
    ],
)
def test_llama_cpp_runs_the_file_with_lmkits_greedy_tokens_and_ids(
    layout: str, kind: str, tok: Tokenizer, tmp_path: Path
) -> None:
    t = tok if kind == "lmkit" else _foreign(kind)
    cfg = _cfg(t.vocab_size, **LAYOUTS[layout])
    ckpt = _ckpt(tmp_path / "ck", cfg, t)
    export_gguf(ckpt, tmp_path / "m.gguf")
    prompt = t.prompt_ids("the cat sat on the")
    model = load_model(ckpt)
    gen = GenerationConfig(max_new_tokens=16, stop_at_eos=False)
    ours = generate_ids(model, torch.tensor([prompt]), gen, vocab=t.vocab_size)[0, len(prompt) :].tolist()
    theirs = _llama_cpp(tmp_path / "m.gguf", prompt, 16, PROBE)
    assert theirs["greedy"] == ours
    assert theirs["ids"] == t.encode(PROBE)
