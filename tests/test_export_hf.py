"""Hugging Face export and import: transformers' Auto classes give lmkit's logits and greedy tokens,
lmkit -> HF -> lmkit is the identity on weights, folders saved by transformers itself import, and
what cannot map is refused with a clear message."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # transformers reads local folders only
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from lmkit.cli import main  # noqa: E402
from lmkit.config import ModelConfig  # noqa: E402
from lmkit.errors import LmkitError  # noqa: E402
from lmkit.models import build_model  # noqa: E402
from lmkit.models.checkpoint import load_meta, load_model, load_state, read_config, record_checksums, save_checkpoint  # noqa: E402
from lmkit.models.hf import target_of  # noqa: E402
from lmkit.ship.export_hf import export_hf  # noqa: E402
from lmkit.ship.import_hf import import_hf  # noqa: E402
from lmkit.ship.verify_hf import PARITY_RTOL, lmkit_greedy, probe_ids  # noqa: E402
from lmkit.tokenizer import Tokenizer, train_tokenizer  # noqa: E402

transformers.logging.set_verbosity_error()

TEXTS = [
    "the cat sat on the mat and the dog sat on the log. " * 3,
    "Hello world, this is lmkit 123! Don't panic; it's fine.",
    "a quick brown fox jumps over the lazy dog while the cat sleeps.",
] * 10


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(TEXTS, vocab_size=420, min_frequency=1, show_progress=False)


def tiny_cfg(family: str, vocab: int, **kw: object) -> ModelConfig:
    """A tiny model of ``family``; ``family`` "roformer" is an encoder with rotary positions."""
    base = dict(
        family="encoder" if family == "roformer" else family,
        vocab_size=vocab,
        d_model=32,
        n_layers=2,
        n_heads=4,
        max_seq_len=48,
        pos_encoding="learned" if family == "encoder" else "rotary",
    )
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def make_ckpt(path: Path, cfg: ModelConfig, tok: Tokenizer | None, seed: int = 0, meta: dict | None = None) -> Path:
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # non-trivial norms and biases, so a swapped name would show
        for _name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    meta = (
        meta
        if meta is not None
        else {
            "step": 3,
            "tokens": 300,
            "flops": 1e9,
            "family": cfg.family,
            "eval": {"loss": 4.0, "perplexity": 54.6, "bits_per_byte": 2.5},
        }
    )
    return save_checkpoint(path, model, cfg, tokenizer=tok, meta=meta)


def hf_logits(hf: torch.nn.Module, family: str, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        if family == "encdec":
            return hf(input_ids=x, decoder_input_ids=y).logits
        return hf(input_ids=x).logits


def lm_logits(model: torch.nn.Module, family: str, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(x, y) if family == "encdec" else model(x)


# "roformer": an encoder with rotary positions (the tiny-encoder recipe), exported as RoFormerForMaskedLM
FAMILIES = [
    ("decoder", True),
    ("decoder", False),
    ("encoder", True),
    ("encoder", False),
    ("roformer", True),
    ("roformer", False),
    ("encdec", True),
    ("encdec", False),
]


@pytest.mark.parametrize("family,tie", FAMILIES)
def test_export_loads_in_transformers_with_same_logits_and_greedy_tokens(
    tmp_path: Path, tok: Tokenizer, family: str, tie: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_cfg(family, tok.vocab_size, tie_embeddings=tie)
    family = cfg.family
    ckpt = make_ckpt(tmp_path / "ckpt", cfg, tok)
    export_hf(ckpt, tmp_path / "hf", verify=False)  # the test below is the check (test_verify_* tests verify)
    out = tmp_path / "hf"
    for f in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "README.md",
    ):
        assert (out / f).is_file(), f
    target = target_of(cfg)
    assert json.loads((out / "config.json").read_text())["architectures"] == [target.architecture]
    hf, info = getattr(transformers, target.auto_class).from_pretrained(
        str(out), local_files_only=True, output_loading_info=True
    )
    hf.eval()
    assert type(hf).__name__ == target.architecture
    assert not info["missing_keys"] and not info["unexpected_keys"], info  # every slot filled from the file
    if family == "encoder" and cfg.pos_encoding == "rotary":  # the sinusoid table is transformers' own, bit for bit
        table = load_file(str(out / "model.safetensors"))["roformer.encoder.embed_positions.weight"]
        assert torch.equal(table, hf.roformer.encoder.embed_positions.create_weight())
    model = load_model(ckpt)

    g = torch.Generator().manual_seed(1)
    x = torch.randint(5, tok.vocab_size, (3, 20), generator=g)
    y = torch.randint(5, tok.vocab_size, (3, 9), generator=g) if family == "encdec" else None
    ours, theirs = lm_logits(model, family, x, y), hf_logits(hf, family, x, y)
    assert ours.shape == theirs.shape
    tol = PARITY_RTOL * max(1.0, float(ours.abs().max()))
    assert float((ours - theirs).abs().max()) <= tol

    if family == "encoder":  # fill-mask: the same top tokens where [MASK] stands
        x[:, 5] = tok.mask_id
        assert torch.equal(
            lm_logits(model, family, x)[:, 5].topk(3).indices, hf_logits(hf, family, x)[:, 5].topk(3).indices
        )
    else:
        prompt = tok.encode("the cat sat on")
        mine = lmkit_greedy(model, cfg, prompt, 6, eos=-1, start=tok.pad_id)
        with torch.no_grad():
            seq = hf.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=6,
                do_sample=False,
                eos_token_id=None,
            )[0].tolist()
        theirs_gen = seq[len(prompt) :] if family == "decoder" else seq[1:]
        assert theirs_gen == mine and len(mine) == 6

    if tie:  # the loading code in the export's README.md runs as printed
        code = (out / "README.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
        assert str(out) in code
        capsys.readouterr()
        exec(compile(code, "README.md", "exec"), {})
        assert capsys.readouterr().out.strip() != ""


@pytest.mark.parametrize("family", ["decoder", "encoder", "roformer", "encdec"])
def test_round_trip_lmkit_hf_lmkit_gives_identical_weights(tmp_path: Path, tok: Tokenizer, family: str) -> None:
    cfg = tiny_cfg(family, tok.vocab_size, tie_embeddings=family != "decoder")
    ckpt = make_ckpt(tmp_path / "ckpt", cfg, tok, seed=3)
    export_hf(ckpt, tmp_path / "hf", verify=False)
    report = import_hf(tmp_path / "hf", tmp_path / "back")
    assert report["training_record_kept"]
    a, b = load_state(ckpt), load_state(tmp_path / "back")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert read_config(ckpt)["model"] == read_config(tmp_path / "back")["model"]
    meta = load_meta(tmp_path / "back")
    assert meta["tokens"] == 300 and meta["eval"]["loss"] == 4.0  # the training record came back
    assert meta["imported_from"]["architecture"] == target_of(cfg).architecture
    assert Tokenizer.load(tmp_path / "back").sha256 == tok.sha256


def test_changed_weights_drop_the_training_record(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg("decoder", tok.vocab_size), tok)
    export_hf(ckpt, tmp_path / "hf", verify=False)
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    state["model.norm.weight"] = state["model.norm.weight"] * 2  # "fine-tuned" elsewhere
    save_file(state, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    report = import_hf(tmp_path / "hf", tmp_path / "back")
    assert not report["training_record_kept"]
    meta = load_meta(tmp_path / "back")
    assert "tokens" not in meta and meta["imported_from"]["training_record"] == "not recorded"
    assert torch.equal(load_state(tmp_path / "back")["norm.weight"], state["model.norm.weight"])


@pytest.mark.parametrize("family", ["decoder", "encoder", "roformer", "encdec"])
def test_auto_tokenizer_gives_lmkit_ids_and_adds_nothing(tmp_path: Path, tok: Tokenizer, family: str) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg(family, tok.vocab_size), tok)
    export_hf(ckpt, tmp_path / "hf", verify=False)
    at = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"), local_files_only=True)
    assert isinstance(at, transformers.PreTrainedTokenizerFast)  # over tokenizer.json, no model-specific class
    for text in ["the cat sat on the mat.", "Hello   world,\n\tdon't 123 ünïcödé 😀", " leading space"]:
        assert at(text)["input_ids"] == tok.encode(text)  # no BOS/EOS added
        assert at.decode(at(text)["input_ids"]) == text
    assert (at.pad_token_id, at.bos_token_id, at.eos_token_id, at.unk_token_id, at.mask_token_id) == (0, 1, 2, 3, 4)
    assert at.convert_tokens_to_ids("<extra_id_0>") == 5
    # special-token text in the input becomes the special id, as lmkit's allow_special=True does
    for s in ("fill <extra_id_0> here </s>", "the [MASK] sat<pad><s> on <extra_id_99>", "<unk>"):
        assert at(s)["input_ids"] == tok.encode(s, allow_special=True)
    assert at.all_special_ids and set(at.all_special_ids) <= set(tok.special_ids)
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 0)


def test_t5_export_sets_decoder_start_token(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg("encdec", tok.vocab_size), tok)
    export_hf(ckpt, tmp_path / "hf", verify=False)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert cfg["decoder_start_token_id"] == gen["decoder_start_token_id"] == tok.pad_id


@pytest.mark.parametrize(
    "family,tie",
    [
        ("decoder", False),
        ("decoder", True),
        ("encoder", True),
        ("encoder", False),
        ("roformer", True),
        ("roformer", False),
        ("encdec", True),
        ("encdec", False),
    ],
)
def test_import_of_a_folder_saved_by_transformers(tmp_path: Path, family: str, tie: bool) -> None:
    """A model built and saved by transformers itself (its own file layout) imports with equal logits."""
    V = 300
    torch.manual_seed(0)
    if family == "decoder":
        c = transformers.LlamaConfig(
            vocab_size=V,
            hidden_size=32,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            tie_word_embeddings=tie,
            rope_theta=500.0,
        )
        hf = transformers.LlamaForCausalLM(c)
    elif family == "encoder":
        c = transformers.BertConfig(
            vocab_size=V,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            tie_word_embeddings=tie,
        )
        hf = transformers.BertForMaskedLM(c)
    elif family == "roformer":
        c = transformers.RoFormerConfig(
            vocab_size=V,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            tie_word_embeddings=tie,
        )
        hf = transformers.RoFormerForMaskedLM(c)
    else:
        c = transformers.T5Config(
            vocab_size=V,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=3,
            num_heads=4,
            feed_forward_proj="relu",
            tie_word_embeddings=tie,
        )
        hf = transformers.T5ForConditionalGeneration(c)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    hf.eval().save_pretrained(str(tmp_path / "hf"))
    report = import_hf(tmp_path / "hf", tmp_path / "ckpt", no_tokenizer=True)
    assert report["architecture"] == type(hf).__name__
    model = load_model(tmp_path / "ckpt")
    family = model.cfg.family
    x = torch.randint(0, V, (2, 12))
    y = torch.randint(0, V, (2, 5)) if family == "encdec" else None
    ours, theirs = lm_logits(model, family, x, y), hf_logits(hf, family, x, y)
    assert float((ours - theirs).abs().max()) <= PARITY_RTOL * max(1.0, float(theirs.abs().max()))
    meta = load_meta(tmp_path / "ckpt")
    assert meta["imported_from"]["weights_sha256"] and meta["family"] == family


def _llama_folder(path: Path, **overrides: object) -> Path:
    c = dict(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    c.update(overrides)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(c))
    return path


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"attention_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "SwiGLU"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
        ({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}, "not supported"),
        (
            {
                "architectures": ["T5ForConditionalGeneration"],
                "model_type": "t5",
                "d_model": 32,
                "num_heads": 4,
                "num_layers": 1,
                "d_ff": 64,
                "feed_forward_proj": "gated-silu",  # gated-gelu (T5 v1.1) imports: tests/test_import_families.py
            },
            "gated",
        ),
        (
            {"architectures": ["BertForMaskedLM"], "model_type": "bert", "position_embedding_type": "relative_key"},
            "absolute",
        ),
        ({"architectures": ["RoFormerForMaskedLM"], "model_type": "roformer", "rotary_value": True}, "rotary_value"),
        ({"architectures": ["RoFormerForMaskedLM"], "model_type": "roformer", "embedding_size": 16}, "embedding_size"),
    ],
)
def test_import_refuses_what_lmkit_cannot_represent(tmp_path: Path, overrides: dict, message: str) -> None:
    folder = _llama_folder(tmp_path / "hf", **overrides)
    with pytest.raises(LmkitError, match=message):
        import_hf(folder, tmp_path / "ckpt", no_tokenizer=True)
    assert not (tmp_path / "ckpt").exists()


def test_import_refuses_a_roformer_with_another_position_table(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg("roformer", tok.vocab_size), tok)
    export_hf(ckpt, tmp_path / "hf", verify=False)
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    state["roformer.encoder.embed_positions.weight"] = state["roformer.encoder.embed_positions.weight"] * 2
    save_file(state, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(LmkitError, match="not RoFormer's sinusoid table"):
        import_hf(tmp_path / "hf", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_import_refuses_unknown_tensors(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg("decoder", tok.vocab_size), tok)
    export_hf(ckpt, tmp_path / "hf", verify=False)
    # a tensor lmkit has no place for (e.g. a bias) is refused, not dropped
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    state["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    save_file(state, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(LmkitError, match="q_proj.bias"):
        import_hf(tmp_path / "hf", tmp_path / "c", no_tokenizer=True)


def test_export_refuses_unmappable_and_quantized_checkpoints(tmp_path: Path, tok: Tokenizer) -> None:
    learned = make_ckpt(tmp_path / "learned", tiny_cfg("decoder", tok.vocab_size, pos_encoding="learned"), tok)
    with pytest.raises(LmkitError, match="no LlamaForCausalLM equivalent"):
        export_hf(learned, tmp_path / "hf1")
    enc = make_ckpt(tmp_path / "enc", tiny_cfg("encoder", tok.vocab_size, pos_encoding="sinusoidal"), tok)
    with pytest.raises(LmkitError, match="sinusoidal positions has no transformers equivalent"):
        export_hf(enc, tmp_path / "hf2")
    theta = make_ckpt(tmp_path / "theta", tiny_cfg("roformer", tok.vocab_size, rope_theta=500.0), tok)
    with pytest.raises(LmkitError, match="rope_theta 500 has no transformers equivalent"):
        export_hf(theta, tmp_path / "hf4")
    q = make_ckpt(tmp_path / "q", tiny_cfg("decoder", tok.vocab_size), tok)
    cfg = json.loads((q / "config.json").read_text())
    cfg["quantization"] = {"to": "int8"}
    (q / "config.json").write_text(json.dumps(cfg))
    record_checksums(q)  # an edited config that is still internally consistent
    with pytest.raises(LmkitError, match="before `lmkit quantize`"):
        export_hf(q, tmp_path / "hf3")
    assert not any((tmp_path / n).exists() for n in ("hf1", "hf2", "hf3", "hf4"))


@pytest.mark.parametrize("family", ["encoder", "roformer", "encdec"])
def test_verify_reports_parity(tmp_path: Path, tok: Tokenizer, family: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_cfg(family, tok.vocab_size)
    ckpt = make_ckpt(tmp_path / "ckpt", cfg, tok)
    p = export_hf(ckpt, tmp_path / "hf")["parity"]
    assert p["ok"] and p["greedy_match"] and p["max_abs_diff"] <= p["tolerance"]
    assert p["loaded_class"] == target_of(cfg).architecture
    assert "Loading weights" not in capsys.readouterr().err  # transformers' progress bar stays quiet


def test_verify_catches_a_wrong_weight_map(tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """If a map sent a tensor to the wrong slot, the export is refused and nothing is written."""
    import lmkit.ship.export_hf as ex

    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg("decoder", tok.vocab_size), tok)
    real = ex.to_hf_state

    def swapped(*a: object, **k: object) -> dict:
        st = real(*a, **k)  # type: ignore[arg-type]
        q, kk = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
        st[q], st[kk] = st[kk], st[q]
        return st

    monkeypatch.setattr(ex, "to_hf_state", swapped)
    with pytest.raises(LmkitError, match="disagrees"):
        export_hf(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("to", ["int8", "bf16"])
def test_quantized_checkpoint_exports_only_dequantized(tmp_path: Path, tok: Tokenizer, to: str) -> None:
    from lmkit.ship.quantize import quantize_checkpoint

    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg("decoder", tok.vocab_size), tok)
    quantize_checkpoint(ckpt, out=tmp_path / "q", to=to)
    with pytest.raises(LmkitError, match="--dequantize"):
        export_hf(tmp_path / "q", tmp_path / "hf")
    report = export_hf(tmp_path / "q", tmp_path / "hf", dequantize=True)
    assert report["parity"]["ok"] and report["dequantized_from"] == to
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), local_files_only=True).eval()
    quantized = load_model(tmp_path / "q")  # lmkit's own quantized model: the exported values are its values
    x = torch.randint(5, tok.vocab_size, (2, 12))
    ours = lm_logits(quantized, "decoder", x).float()
    assert float((ours - hf_logits(hf, "decoder", x)).abs().max()) <= 2e-2 * max(1.0, float(ours.abs().max()))
    assert "dequantized from" in (tmp_path / "hf" / "README.md").read_text()


def test_export_never_replaces_a_folder_without_overwrite(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg("decoder", tok.vocab_size), tok)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(LmkitError, match="--overwrite"):
        export_hf(ckpt, out, verify=False)
    assert (out / "mine.txt").read_text() == "keep me"
    # --overwrite replaces a previous export only, never a folder of the user's own files
    with pytest.raises(LmkitError, match="did not write"):
        export_hf(ckpt, out, overwrite=True, verify=False)
    assert (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()
    export_hf(ckpt, out, verify=False)
    export_hf(ckpt, out, overwrite=True, verify=False)
    assert (out / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_cli_export_and_import(tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tiny_cfg("decoder", tok.vocab_size), tok)
    assert main(["export", str(ckpt), "--format", "hf", "--out", str(tmp_path / "hf"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity"]["ok"] and report["architecture"] == "LlamaForCausalLM"
    assert main(["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    assert "LlamaForCausalLM" in capsys.readouterr().out
    assert main(["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["import-hf", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2


def test_probe_ids_fit_the_vocabulary_and_window() -> None:
    cfg = ModelConfig(vocab_size=120, d_model=16, n_layers=1, n_heads=2, max_seq_len=8)
    ids = probe_ids(cfg, None)
    assert len(ids) == 8 and all(0 <= i < 120 for i in ids)


def test_import_reads_sharded_safetensors_and_pickle_free_bin(tmp_path: Path) -> None:
    torch.manual_seed(0)
    c = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    hf = transformers.LlamaForCausalLM(c).eval()
    hf.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    import_hf(tmp_path / "sharded", tmp_path / "a", no_tokenizer=True)
    shutil.copytree(tmp_path / "sharded", tmp_path / "bin", ignore=shutil.ignore_patterns("*.safetensors*"))
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    import_hf(tmp_path / "bin", tmp_path / "b", no_tokenizer=True)
    x = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        ref = hf(input_ids=x).logits
    for ck in ("a", "b"):
        assert torch.allclose(load_model(tmp_path / ck)(x), ref, atol=1e-5)


@pytest.mark.parametrize("family", ["decoder", "roformer", "encdec"])
def test_imported_model_continues_pretraining_and_is_evaluated(
    tmp_path: Path, tok: Tokenizer, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Domain adaptation: a model saved by transformers, imported, then trained on by `lmkit pretrain --init`."""
    V = tok.vocab_size
    torch.manual_seed(0)
    if family == "decoder":
        hf = transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                vocab_size=V,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                max_position_embeddings=64,
            )
        )
    elif family == "roformer":
        hf = transformers.RoFormerForMaskedLM(
            transformers.RoFormerConfig(
                vocab_size=V,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                max_position_embeddings=64,
            )
        )
    else:
        hf = transformers.T5ForConditionalGeneration(
            transformers.T5Config(
                vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, feed_forward_proj="relu"
            )
        )
    hf.save_pretrained(str(tmp_path / "hf"))
    tok.save(tmp_path / "tokenizer.json")
    assert (
        main(
            [
                "import-hf",
                str(tmp_path / "hf"),
                "--out",
                str(tmp_path / "imported"),
                "--max-seq-len",
                "32",
                "--tokenizer",
                str(tmp_path / "tokenizer.json"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    (tmp_path / "domain.txt").write_text("\n\n".join(TEXTS * 4), encoding="utf-8")
    assert (
        main(
            [
                "pretrain",
                "--init",
                str(tmp_path / "imported"),
                "--data",
                str(tmp_path / "domain.txt"),
                "--out",
                str(tmp_path / "adapted"),
                "--max-steps",
                "2",
                "--train.lr",
                "1e-5",
                "--train.warmup_steps",
                "0",
                "--train.batch_size",
                "4",
                "--train.eval_batches",
                "1",
                "--train.eval_every",
                "0",
                "--train.ckpt_every",
                "0",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    adapted = Path(summary["checkpoint"])
    meta = load_meta(adapted)
    assert meta["init_from"] == str(tmp_path / "imported") and meta["step"] == 2
    assert 0 < meta["eval"]["loss"] < 2 * torch.log(torch.tensor(float(V))).item()  # evaluated, finite
    before, after = load_state(tmp_path / "imported"), load_state(adapted)
    assert before.keys() == after.keys()
    moved = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert 0 < moved < 1e-3  # trained from the imported weights (a fresh start would differ by ~0.02+)
