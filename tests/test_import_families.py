"""Foundation encoders and encoder-decoders beyond BERT and T5 v1.0: RoBERTa (position table offset by its
padding index, one token type, its own names) and Flan-T5 / T5 v1.1 (gated tanh-GELU MLP, heads narrower
than d_model / n_heads, an untied head without output scaling). Each is built tiny by transformers from a
shrunken copy of the real config.json (the real keys), its 1-D parameters perturbed, imported, and must
compute what transformers computes (logits; for the encoder-decoder also cached decoding and greedy
``generate``), export back to the same class with the same logits, and be planned with its real
parameter count. Settings lmkit cannot represent are refused in one line naming the key."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import transformers  # noqa: E402

from foundation_models import BART_BASE, DISTILROBERTA, FLAN_T5_SMALL, build_hf, tol  # noqa: E402
from lmkit.config import ModelConfig, model_config_from_dict  # noqa: E402
from lmkit.config_io import ConfigError  # noqa: E402
from lmkit.errors import LmkitError  # noqa: E402
from lmkit.infer.generate import generate_seq2seq_ids  # noqa: E402
from lmkit.infer.sampling import GenerationConfig  # noqa: E402
from lmkit.models import build_model, count_parameters  # noqa: E402
from lmkit.models.checkpoint import load_model  # noqa: E402
from lmkit.models.hf import hf_architecture  # noqa: E402
from lmkit.plan.compute import count_params  # noqa: E402
from lmkit.ship.export_hf import export_hf  # noqa: E402
from lmkit.ship.import_hf import import_hf  # noqa: E402

transformers.logging.set_verbosity_error()

# Shrunken copies of real config.json files (tests/foundation_models.py): every key as the real file spells it.
SEQ2SEQ = {
    "bart-base": BART_BASE,
    "flan-t5-small": FLAN_T5_SMALL,
    # a plain tanh-GELU MLP with a tied, scaled head and heads that split d_model (the T5 v1.0 shape otherwise)
    "t5-plain-gelu": {
        **FLAN_T5_SMALL,
        "feed_forward_proj": "gelu_new",
        "dense_act_fn": "gelu_new",
        "is_gated_act": False,
        "d_kv": 8,
        "num_heads": 4,
        "tie_word_embeddings": True,
    },
}
ENCODERS = {
    "distilroberta": DISTILROBERTA,
    "roberta-untied": {**DISTILROBERTA, "tie_word_embeddings": False, "position_embedding_type": "absolute"},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def imported_folder(root: Path, real: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformers model, lmkit model) of ``real``: saved by transformers, imported from its own config.json
    and from the real (4.x) one, which must give the same lmkit config."""
    hf = build_hf(real)
    hf.save_pretrained(str(root / "hf"))
    import_hf(root / "hf", root / "ckpt", no_tokenizer=True)
    (root / "hf4").mkdir()
    for f in (root / "hf").iterdir():
        (root / "hf4" / f.name).write_bytes(f.read_bytes())
    (root / "hf4" / "config.json").write_text(json.dumps(real))
    import_hf(root / "hf4", root / "ckpt4", no_tokenizer=True)
    model = load_model(root / "ckpt").eval()
    assert load_model(root / "ckpt4").cfg == model.cfg
    return hf, model


def ids(shape: tuple[int, ...], vocab: int, seed: int, low: int = 3) -> torch.Tensor:
    """Random ids past RoBERTa's <s> <pad> </s> (transformers numbers positions around the padding id)."""
    return torch.randint(low, vocab, shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- RoBERTa


@pytest.fixture(scope="module", params=sorted(ENCODERS))
def encoder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    real = ENCODERS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    hf, model = imported_folder(root, real)
    return {"real": real, "hf": hf, "model": model, "root": root}


def test_roberta_logits_match_transformers_with_and_without_padding(encoder: dict[str, Any]) -> None:
    hf, model = encoder["hf"], encoder["model"]
    assert model.cfg.type_vocab_size == 1 and model.cfg.max_seq_len == 32  # 34 rows less the offset of 2
    assert hf_architecture(model.cfg) == "RobertaForMaskedLM"
    x = ids((2, 32), model.cfg.vocab_size, 0)  # the whole context window: every position row is used
    with torch.no_grad():
        theirs, ours = hf(input_ids=x).logits, model(x)
    assert float((ours - theirs).abs().max()) <= tol(theirs)
    # a right-padded batch: real tokens agree; padding (RoBERTa's id 1) is neither attended to nor scored
    x = ids((2, 12), model.cfg.vocab_size, 1)
    mask = torch.ones_like(x)
    x[1, 7:], mask[1, 7:] = 1, 0
    with torch.no_grad():
        theirs, ours = hf(input_ids=x, attention_mask=mask).logits, model(x, attention_mask=mask)
    real = mask.bool()
    assert float((ours[real] - theirs[real]).abs().max()) <= tol(theirs)


def test_roberta_exports_back_to_its_class_with_the_same_logits(encoder: dict[str, Any]) -> None:
    hf, root, real = encoder["hf"], encoder["root"], encoder["real"]
    report = export_hf(root / "ckpt", root / "export")
    assert report["parity"]["ok"] and report["architecture"] == "RobertaForMaskedLM"
    written = json.loads((root / "export" / "config.json").read_text())
    assert (written["max_position_embeddings"], written["type_vocab_size"], written["pad_token_id"]) == (34, 1, 1)
    back = transformers.AutoModelForMaskedLM.from_pretrained(str(root / "export"), attn_implementation="eager").eval()
    assert type(back).__name__ == "RobertaForMaskedLM"
    x = ids((2, 32), real["vocab_size"], 2)
    with torch.no_grad():
        want, got = hf(input_ids=x).logits, back(input_ids=x).logits
    assert float((want - got).abs().max()) <= tol(want)


def test_roberta_is_planned_with_its_real_parameter_count(encoder: dict[str, Any]) -> None:
    model, hf = encoder["model"], encoder["hf"]
    counted = count_params(model.cfg)
    # transformers counts the 2 position rows no real token reads (lmkit has no such rows) and, untied, keeps
    # the decoder's bias apart from lm_head.bias (lmkit has the one in use)
    unread = 2 * model.cfg.d_model + (0 if model.cfg.tie_embeddings else model.cfg.vocab_size)
    assert counted.total == count_parameters(model) == sum(p.numel() for p in hf.parameters()) - unread


# --------------------------------------------------------------------------- T5 v1.1 / Flan-T5


@pytest.fixture(scope="module", params=sorted(SEQ2SEQ))
def seq2seq(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    real = SEQ2SEQ[request.param]
    root = tmp_path_factory.mktemp(request.param)
    hf, model = imported_folder(root, real)
    return {"name": request.param, "real": real, "hf": hf, "model": model, "root": root}


def test_t5_fields_name_the_variant(seq2seq: dict[str, Any]) -> None:
    cfg = seq2seq["model"].cfg
    if seq2seq["name"] == "bart-base":
        assert (cfg.norm, cfg.bias, cfg.residual, cfg.embed_norm, cfg.pos_encoding) == (
            "layer",
            "all",
            "post",
            True,
            "learned",
        )
        assert (cfg.mlp, cfg.activation, cfg.max_seq_len, cfg.objective) == ("plain", "gelu", 40, "infill")
        assert seq2seq["model"].output_scale == 1.0 and hf_architecture(cfg) == "BartForConditionalGeneration"
        return
    if seq2seq["name"] == "flan-t5-small":
        assert (cfg.mlp, cfg.activation, cfg.head_dim, cfg.tie_embeddings) == ("gated", "gelu_tanh", 8, False)
        assert seq2seq["model"].output_scale == 1.0  # Flan-T5's untied head: no d_model^-0.5 before it
    else:
        assert (cfg.mlp, cfg.activation, cfg.head_size, cfg.tie_embeddings) == ("plain", "gelu_tanh", None, True)
    assert cfg.n_decoder_layers is None and hf_architecture(cfg) == "T5ForConditionalGeneration"


def test_t5_logits_match_transformers_with_teacher_forcing_and_a_padded_batch(seq2seq: dict[str, Any]) -> None:
    hf, model = seq2seq["hf"], seq2seq["model"]
    V = model.cfg.vocab_size
    x, y = ids((2, 20), V, 3, low=2), ids((2, 9), V, 4, low=2)
    mask = torch.ones_like(x)
    mask[1, 13:] = 0  # the second input is right-padded
    with torch.no_grad():
        theirs = hf(input_ids=x, attention_mask=mask, decoder_input_ids=y).logits
        ours = model(x, y, attention_mask=mask)
    assert float((ours - theirs).abs().max()) <= tol(theirs)


def test_t5_cached_decoding_matches_transformers_logits_and_generate(seq2seq: dict[str, Any]) -> None:
    hf, model = seq2seq["hf"], seq2seq["model"]
    V = model.cfg.vocab_size
    x, y = ids((2, 16), V, 5, low=2), ids((2, 7), V, 6, low=2)
    with torch.no_grad():
        theirs = hf(input_ids=x, decoder_input_ids=y).logits  # (2, 7, V) teacher forcing
        enc = model.encode(x)
        kv, cache = model.cross_kv(enc), model.new_cache(2)
        steps = [model.logits(model.decode(y[:, t : t + 1], None, cache=cache, cross_kv=kv)) for t in range(7)]
    ours = torch.cat(steps, dim=1)  # one token at a time through the self-attention cache
    assert float((ours - theirs).abs().max()) <= tol(theirs)
    gen = GenerationConfig(max_new_tokens=10)
    start = seq2seq["real"]["decoder_start_token_id"]  # T5: <pad> 0; BART: </s> 2
    mine = generate_seq2seq_ids(model, x, gen, start_id=start, eos_id=None)
    uncached = generate_seq2seq_ids(model, x, gen, start_id=start, eos_id=None, cache=False)
    with torch.no_grad():  # plain greedy: nothing forced, no n-gram ban, one beam (bart-base's config has all three)
        seq = hf.generate(
            x,
            max_new_tokens=10,
            do_sample=False,
            num_beams=1,
            no_repeat_ngram_size=0,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            eos_token_id=None,
            decoder_start_token_id=start,
        )
    assert torch.equal(mine, uncached) and torch.equal(mine, seq[:, 1:]) and mine.shape == (2, 10)


def test_t5_exports_back_to_its_class_with_the_same_logits(seq2seq: dict[str, Any]) -> None:
    hf, root, real = seq2seq["hf"], seq2seq["root"], seq2seq["real"]
    report = export_hf(root / "ckpt", root / "export")
    assert report["parity"]["ok"] and report["architecture"] == real["architectures"][0]
    written = json.loads((root / "export" / "config.json").read_text())
    if "d_kv" in real:
        assert (written["feed_forward_proj"], written["d_kv"]) == (real["feed_forward_proj"], real["d_kv"])
    else:
        assert written["max_position_embeddings"] == real["max_position_embeddings"]
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(root / "export"), attn_implementation="eager")
    x, y = ids((2, 12), real["vocab_size"], 7, low=2), ids((2, 5), real["vocab_size"], 8, low=2)
    with torch.no_grad():
        want, got = hf(input_ids=x, decoder_input_ids=y).logits, back.eval()(input_ids=x, decoder_input_ids=y).logits
    assert float((want - got).abs().max()) <= tol(want)
    assert load_model(root / "ckpt").cfg == seq2seq["model"].cfg


def test_t5_is_planned_with_its_real_parameter_count(seq2seq: dict[str, Any]) -> None:
    model, hf = seq2seq["model"], seq2seq["hf"]
    counted = count_params(model.cfg)
    # transformers 5 keeps an unscaled head on the shared matrix's storage; lmkit's untied head is its own
    own_head = 0 if model.cfg.tie_embeddings else model.cfg.vocab_size * model.cfg.d_model
    # BART's two position tables each hold 2 rows no position reads (lmkit has no such rows)
    unread = 2 * 2 * model.cfg.d_model if model.cfg.norm == "layer" else 0
    assert counted.total == count_parameters(model) == sum(p.numel() for p in hf.parameters()) + own_head - unread
    tables = 2 * model.cfg.max_seq_len * model.cfg.d_model if model.cfg.norm == "layer" else 2 * 32 * model.cfg.n_heads
    assert counted.embedding == model.tok_emb.weight.numel() + tables


# --------------------------------------------------------------------------- refused, in one line


def _folder(path: Path, real: dict[str, Any], **changes: Any) -> Path:
    c = {**copy.deepcopy(real), **changes}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(c))
    return path


@pytest.mark.parametrize(
    "real,changes,message",
    [
        (DISTILROBERTA, {"pad_token_id": 0}, "pad_token_id 0"),
        (DISTILROBERTA, {"type_vocab_size": 2}, "type_vocab_size 2 != 1"),
        (DISTILROBERTA, {"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key'"),
        (FLAN_T5_SMALL, {"feed_forward_proj": "gated-silu", "dense_act_fn": "silu"}, "feed_forward_proj 'gated-silu'"),
        (FLAN_T5_SMALL, {"feed_forward_proj": "gated-tanh", "dense_act_fn": "tanh"}, "feed_forward_proj 'gated-tanh'"),
        (FLAN_T5_SMALL, {"relative_attention_num_buckets": 64}, "relative_attention_num_buckets must be 32"),
        (BART_BASE, {"scale_embedding": True}, "scale_embedding True"),
        (BART_BASE, {"normalize_before": True}, "normalize_before True"),
        (BART_BASE, {"add_final_layer_norm": True}, "add_final_layer_norm True"),
        (BART_BASE, {"decoder_attention_heads": 2}, "decoder_attention_heads / decoder_ffn_dim differ"),
        (BART_BASE, {"activation_function": "tanh"}, "activation_function 'tanh'"),
    ],
)
def test_settings_lmkit_cannot_represent_are_refused_in_one_line(
    tmp_path: Path, real: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    folder = _folder(tmp_path / "hf", real, **changes)
    with pytest.raises(LmkitError, match=message) as err:
        import_hf(folder, tmp_path / "ckpt", no_tokenizer=True)
    assert "\n" not in str(err.value) and str(folder / "config.json") in str(err.value)
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(
    "fields,key",
    [
        ({"family": "decoder", "type_vocab_size": 1}, "model.type_vocab_size"),
        ({"family": "encoder", "type_vocab_size": 0}, "model.type_vocab_size"),
        ({"family": "decoder", "activation": "relu"}, "model.activation"),
        ({"family": "encoder", "mlp": "plain"}, "model.mlp"),
        ({"family": "encoder", "activation": "relu"}, "model.activation"),
        ({"family": "encdec", "head_size": 0}, "model.head_size"),
        ({"family": "encdec", "bias": "all"}, "model.bias"),
        (
            {"family": "encdec", "norm": "layer", "bias": "all", "residual": "post", "embed_norm": True},
            "model.pos_encoding",
        ),
        ({"family": "encdec", "norm": "layer", "bias": "none"}, "model.bias"),
        ({"family": "decoder", "residual": "post"}, "model.residual"),
    ],
)
def test_family_variants_out_of_place_are_refused_naming_the_key(fields: dict[str, Any], key: str) -> None:
    base = {"d_model": 32, "n_heads": 4, "n_layers": 1, "vocab_size": 64, "max_seq_len": 16}
    with pytest.raises(ConfigError) as err:
        model_config_from_dict({**base, **fields})
    assert err.value.key == key and key in str(err.value) and "\n" not in str(err.value)


def test_an_encoder_with_one_token_type_builds_and_counts() -> None:
    cfg = ModelConfig(
        family="encoder", vocab_size=64, d_model=32, n_layers=1, n_heads=4, max_seq_len=16, pos_encoding="learned"
    )
    assert cfg.type_vocab_size == 2 and hf_architecture(cfg) == "BertForMaskedLM"
    one = ModelConfig(**{**cfg.__dict__, "type_vocab_size": 1})
    model = build_model(one)
    assert model.type_emb.weight.shape == (1, 32)
    assert count_params(one).total == count_parameters(model) == count_params(cfg).total - 32


@pytest.mark.parametrize("written", [{}, {"mlp": "gated", "activation": "silu"}])
def test_encdec_configs_written_before_the_variants_are_t5_v10(written: dict[str, Any]) -> None:
    """An encdec config without the MLP keys, or with the decoder's defaults in them (as every encdec checkpoint
    saved since those fields existed has), is the T5 v1.0 model it always was: plain ReLU ``wi``/``wo``."""
    base = {"family": "encdec", "d_model": 32, "n_heads": 4, "n_layers": 1, "vocab_size": 64, "max_seq_len": 16}
    cfg = model_config_from_dict({**base, **written})
    assert (cfg.mlp, cfg.activation, cfg.head_dim) == ("plain", "relu", 8)
    names = set(build_model(cfg).state_dict())
    assert {"encoder.blocks.0.mlp.wi.weight", "encoder.blocks.0.mlp.wo.weight"} <= names
    assert not any("wi_0" in n for n in names)
    assert model_config_from_dict(dataclasses.asdict(cfg)) == cfg  # and it saves and loads as itself


def test_bart_base_files_saved_from_bartmodel_import(tmp_path: Path) -> None:
    """facebook/bart-base's config.json names ``BartModel``: weights without the ``model.`` prefix and without
    ``final_logits_bias`` (transformers starts it at zeros; so does lmkit)."""
    hf = build_hf(BART_BASE)
    with torch.no_grad():
        hf.final_logits_bias.zero_()
    base = hf.model
    base.config.architectures = ["BartModel"]
    base.save_pretrained(str(tmp_path / "hf"))
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["architectures"] == ["BartModel"]
    import_hf(tmp_path / "hf", tmp_path / "ckpt", no_tokenizer=True)
    model = load_model(tmp_path / "ckpt").eval()
    x, y = ids((2, 14), BART_BASE["vocab_size"], 9), ids((2, 6), BART_BASE["vocab_size"], 10)
    with torch.no_grad():
        theirs, ours = hf(input_ids=x, decoder_input_ids=y).logits, model(x, y)
    assert float((ours - theirs).abs().max()) <= tol(theirs)
    assert hf_architecture(model.cfg) == "BartForConditionalGeneration"


def test_bart_with_its_byte_level_bpe_tokenizer_decodes_from_eos_as_transformers(tmp_path: Path) -> None:
    """A BART import carrying its tokenizer (bart-base's kind: byte-level BPE, <s> <pad> </s> <unk>, <mask> last):
    generation starts from </s> (the config's decoder_start_token_id), greedy tokens equal transformers', and
    the export (verified with the tokenizer's ids) is BART again."""
    from lmkit.infer.text import generate_seq2seq
    from lmkit.models.checkpoint import load_tokenizer
    from test_foreign_objectives import _byte_bpe

    folder = _byte_bpe(tmp_path / "hf")  # tokenizer files (its config.json is replaced by the model's below)
    vocab = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]) + 1  # + <mask>
    hf = build_hf({**BART_BASE, "vocab_size": vocab})
    hf.save_pretrained(str(folder))
    import_hf(folder, tmp_path / "ckpt")
    model, tok = load_model(tmp_path / "ckpt").eval(), load_tokenizer(tmp_path / "ckpt")
    assert (tok.decoder_start_id, tok.eos_id, tok.pad_id) == (2, 2, 1)
    res = generate_seq2seq(model, tok, "the cat sat on the mat", GenerationConfig(max_new_tokens=8, stop_at_eos=False))
    with torch.no_grad():
        seq = hf.generate(
            torch.tensor([res.prompt_ids]),
            max_new_tokens=8,
            do_sample=False,
            num_beams=1,
            no_repeat_ngram_size=0,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            eos_token_id=None,
            decoder_start_token_id=2,
        )[0].tolist()
    assert seq[0] == 2 and res.token_ids == seq[1:] and len(res.token_ids) == 8
    report = export_hf(tmp_path / "ckpt", tmp_path / "export")
    assert report["parity"]["ok"] and report["architecture"] == "BartForConditionalGeneration"
    assert json.loads((tmp_path / "export" / "config.json").read_text())["decoder_start_token_id"] == 2
