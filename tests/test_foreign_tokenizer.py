"""Foreign tokenizers used as they are, with their roles (issue 27).

Four tokenizers are trained here with ``tokenizers`` in the shapes real models have (GPT-2's
byte-level BPE with ``<|endoftext|>``; Llama-3's with a regex split and a post-processor adding
``<|begin_of_text|>``; Qwen2.5's with an NFC normalizer and no BOS; TinyLlama's SentencePiece BPE
with ``▁`` and ``<0xNN>`` byte fallback) and saved through ``transformers`` with their roles in
tokenizer_config / generation_config / config.json as the real models have them. lmkit's ids must
equal ``AutoTokenizer``'s, bytes must join to the text's, and every part (packing, generation,
evaluate, checkpoints) must use the model's own roles.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from lmkit.config import ModelConfig
from lmkit.data.document import Document
from lmkit.data.pack import pack
from lmkit.data.shards import TokenShards
from lmkit.errors import LmkitError
from lmkit.infer.evaluate import evaluate_checkpoint
from lmkit.infer.sampling import GenerationConfig
from lmkit.infer.text import generate
from lmkit.models import build_model
from lmkit.models.checkpoint import load_meta, load_tokenizer, save_checkpoint
from lmkit.token_roles import ROLES_FILE
from lmkit.tokenizer import Tokenizer, import_tokenizer, train_tokenizer

transformers = pytest.importorskip("transformers")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Café, naïve, résumé; Straße.",
    "Line one\nline two\n\nA third line with  double  spaces and\ttabs.",
    "Numbers 12345 and 3.14159, emoji 😀 and accents àéîõü.",
    "the licensee shall keep the records for seven years after the term",
] * 30
TEXTS = [
    "Hello world",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "café naïve résumé Ünïcödé",
    "emoji 😀🎉 and 👍🏽 here",
    "line one\nline two\n\nthree\n",
    "tabs\tand  double  spaces",
    "中文文本 日本語",
    "\nstarts with a newline",
]
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _byte_level(pre: Any, normalizer: Any = None, vocab: int = 420) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _sentencepiece(legacy: bool = False) -> HFTokenizer:
    """TinyLlama's shape: <unk> <s> </s> at 0..2, <0x00>..<0xFF> at 3..258 in the model's vocabulary,
    then merges learned on ▁-marked words; byte fallback, a post-processor adding <s>; Metaspace, or
    (``legacy``, as TinyLlama's own file) a normalizer that prepends ▁ and replaces spaces."""
    probe = HFTokenizer(models.BPE(unk_token="<unk>"))
    probe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    probe.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=330, limit_alphabet=60, special_tokens=["<unk>"], show_progress=False)
    )
    learned = json.loads(probe.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if "\n" not in t:  # as SentencePiece: a newline is the byte <0x0A>
            vocab.setdefault(t, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    merges = [m for m in merges if "\n" not in m[0] + m[1]]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tok


def _save(
    tok: HFTokenizer,
    folder: Path,
    specials: dict[str, str],
    generation: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(str(folder))
    for name, content in (("generation_config.json", generation), ("config.json", config)):
        if content is not None:
            (folder / name).write_text(json.dumps(content), encoding="utf-8")
    return folder


def _make(kind: str, folder: Path) -> Path:
    if kind == "gpt2":
        tok = _byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False))
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        tok.add_special_tokens(["<|endoftext|>"])
        e = tok.token_to_id("<|endoftext|>")
        specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
        return _save(
            tok, folder, specials, {"bos_token_id": e, "eos_token_id": e}, {"bos_token_id": e, "eos_token_id": e}
        )
    if kind == "llama3":
        split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
        tok = _byte_level(
            pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        )
        tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
        b, e, eot = (tok.token_to_id(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"))
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", b)],
        )
        specials = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
        return _save(
            tok, folder, specials, {"bos_token_id": b, "eos_token_id": [e, eot]}, {"bos_token_id": b, "eos_token_id": e}
        )
    if kind == "qwen":
        split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
        pre = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok = _byte_level(pre, normalizer=normalizers.NFC())
        tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        e, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
        specials = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}  # Qwen2.5-Instruct's; bos_token null
        return _save(
            tok,
            folder,
            specials,
            {"bos_token_id": e, "eos_token_id": [im_end, e]},
            {"bos_token_id": e, "eos_token_id": im_end},
        )
    tok = _sentencepiece(legacy=kind == "sentencepiece_legacy")
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return _save(tok, folder, specials, {"bos_token_id": 1, "eos_token_id": 2}, {"bos_token_id": 1, "eos_token_id": 2})


KINDS = ["gpt2", "llama3", "qwen", "sentencepiece", "sentencepiece_legacy"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foreign")
    return {k: _make(k, root / k) for k in KINDS}


def _ours(folder: Path, **given: str) -> Tokenizer:
    return import_tokenizer(folder, None, 10_000, given)


def _auto(folder: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(str(folder))


# --------------------------------------------------------------------------- ids, bytes, roles


@pytest.mark.parametrize("kind", KINDS)
def test_ids_equal_autotokenizer_with_and_without_the_post_processors_specials(
    folders: dict[str, Path], kind: str
) -> None:
    ours, theirs = _ours(folders[kind]), _auto(folders[kind])
    for text in TEXTS:
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], (kind, text)
        if text:
            assert ours.prompt_ids(text) == theirs(text)["input_ids"], (kind, text)
    if kind == "gpt2":
        assert ours.fast, ours.fast_reason  # GPT-2's own shape: tiktoken, checked identical
    else:
        assert not ours.fast  # another regex, a normalizer or SentencePiece: Hugging Face's own path


@pytest.mark.parametrize("kind", KINDS)
def test_token_bytes_join_to_the_texts_utf8_bytes(folders: dict[str, Path], kind: str) -> None:
    tok = _ours(folders[kind])
    for text in TEXTS:
        ids, pieces = tok.encode_with_bytes(text)
        assert ids == tok.encode(text)
        assert b"".join(pieces) == text.encode("utf-8"), (kind, text)
        joined = b"".join(tok.token_bytes(i) for i in ids)
        if kind == "sentencepiece_legacy" and text or kind == "sentencepiece" and text and not text.startswith(" "):
            assert joined == b" " + text.encode("utf-8")  # the ▁ SentencePiece puts first is no byte of the text
        else:
            assert joined == text.encode("utf-8"), (kind, text)
    if kind.startswith("sentencepiece"):
        ids = tok.encode("中\n")
        assert (
            "<0x0A>" in [tok.hf.id_to_token(i) for i in ids] and tok.token_bytes(tok.hf.token_to_id("<0x0A>")) == b"\n"
        )
    if kind == "qwen":  # NFC rewrites a decomposed é: the tokens cover the text's own bytes all the same
        text = "cafe\u0301 au lait"
        assert b"".join(tok.encode_with_bytes(text)[1]) == text.encode("utf-8")


def test_roles_are_read_as_the_real_models_have_them(folders: dict[str, Path]) -> None:
    g = _ours(folders["gpt2"])
    e = g.hf.token_to_id("<|endoftext|>")
    assert (g.bos_id, g.eos_ids, g.separator_id, g.unk_id, g.pad_id, g.adds_bos) == (e, (e,), e, e, -1, False)
    ll = _ours(folders["llama3"])
    ids = {t: ll.hf.token_to_id(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")}
    assert ll.bos_id == ids["<|begin_of_text|>"] and ll.adds_bos
    assert ll.eos_ids == (ids["<|end_of_text|>"], ids["<|eot_id|>"]) and ll.separator_id == ids["<|end_of_text|>"]
    q = _ours(folders["qwen"])
    e, im_end = q.hf.token_to_id("<|endoftext|>"), q.hf.token_to_id("<|im_end|>")
    # generation stops on either; documents are separated by the end-of-text, not the chat turn's end
    assert q.eos_ids == (im_end, e) and q.separator_id == e and q.pad_id == e and not q.adds_bos
    sp = _ours(folders["sentencepiece"])
    assert (sp.bos_id, sp.eos_ids, sp.separator_id, sp.unk_id, sp.adds_bos) == (1, (2,), 2, 0, True)


def test_lmkit_tokenizers_keep_their_hash_and_have_no_roles_file(tmp_path: Path) -> None:
    import hashlib

    tok = train_tokenizer(CORPUS, vocab_size=400, show_progress=False)
    assert tok.sha256 == hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()
    tok.save(tmp_path)
    assert not (tmp_path / ROLES_FILE).exists()
    back = Tokenizer.load(tmp_path)
    assert back.sha256 == tok.sha256 and (back.eos_ids, back.separator_id, back.adds_bos) == ((2,), 2, False)


def test_roles_are_kept_beside_the_tokenizer_and_in_its_hash(folders: dict[str, Path], tmp_path: Path) -> None:
    tok = _ours(folders["llama3"])
    tok.save(tmp_path / "a")
    assert (tmp_path / "a" / ROLES_FILE).is_file()
    back = Tokenizer.load(tmp_path / "a")
    assert back.roles == tok.roles and back.sha256 == tok.sha256
    other = _ours(folders["llama3"], eos="<|eot_id|>")  # same tokenizer.json, another eos role
    assert other.to_str() == tok.to_str() and other.sha256 != tok.sha256
    assert other.eos_ids == (other.hf.token_to_id("<|eot_id|>"),) and other.separator_id == other.eos_ids[0]


def test_checkpoint_checksums_the_roles_file(folders: dict[str, Path], tmp_path: Path) -> None:
    tok = _ours(folders["llama3"])
    cfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_seq_len=32)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_model(cfg), cfg, tokenizer=tok)
    assert ROLES_FILE in load_meta(ckpt)["sha256"]
    assert load_tokenizer(ckpt).roles == tok.roles
    roles = json.loads((ckpt / ROLES_FILE).read_text())
    roles["eos"] = roles["eos"][:1]
    (ckpt / ROLES_FILE).write_text(json.dumps(roles))
    with pytest.raises(LmkitError, match="checksum mismatch") as e:
        load_tokenizer(ckpt)
    assert ROLES_FILE in str(e.value)


# --------------------------------------------------------------------------- every part uses the roles


@pytest.mark.parametrize("kind", KINDS)
def test_packing_puts_the_models_own_separator_and_bos(folders: dict[str, Path], kind: str, tmp_path: Path) -> None:
    tok, auto = _ours(folders[kind]), _auto(folders[kind])
    docs = [Document(id=f"d{i}", text=t, source="test") for i, t in enumerate(TEXTS) if t]
    pack(docs, tok, tmp_path / "shards", val_fraction=0.0, show_progress=False)
    shards = TokenShards(tmp_path / "shards" / "train")
    got = np.concatenate([np.asarray(a) for a in shards._arrays]).tolist()
    want: list[int] = []
    for d in docs:
        want += auto(d.text)["input_ids"] + [tok.separator_id]  # the post-processor's BOS, the text, the separator
    assert got == want
    assert shards.eos_id == tok.separator_id and shards.tokenizer_sha256 == tok.sha256
    assert Tokenizer.load(tmp_path / "shards").sha256 == tok.sha256  # the roles travel with the shards


def _always(tok: Tokenizer, token: int, rows: int | None = None) -> Any:
    """A decoder whose next token is always ``token`` (residual dimension 0 carries it to the head)."""
    cfg = ModelConfig(
        family="decoder",
        vocab_size=rows or tok.vocab_size,
        d_model=16,
        n_layers=1,
        n_heads=2,
        max_seq_len=64,
        tie_embeddings=False,
    )
    model = build_model(cfg)
    with torch.no_grad():
        model.tok_emb.weight[:, 0] = 50.0
        for block in model.blocks:
            block.attn.o_proj.weight[0] = 0.0
            block.mlp.down_proj.weight[0] = 0.0
        model.norm.weight.zero_()
        model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[token, 0] = 1.0
    return model.eval()


def test_generation_stops_on_any_of_the_models_eos_ids_and_starts_with_bos(folders: dict[str, Path]) -> None:
    tok = _ours(folders["llama3"])
    eot = tok.hf.token_to_id("<|eot_id|>")  # the second eos id: generation_config's list
    res = generate(_always(tok, eot), tok, "Hello world", GenerationConfig(max_new_tokens=6))
    assert res.stop_reason == "eos" and res.token_ids == [eot] and res.completion == ""
    assert res.prompt_ids == _auto(folders["llama3"])("Hello world")["input_ids"]  # BOS first, as the model expects
    other = tok.hf.token_to_id("Ġthe") or 5
    res = generate(_always(tok, other), tok, "", GenerationConfig(max_new_tokens=3))
    assert res.prompt_ids == [tok.bos_id] and res.stop_reason == "max_new_tokens"
    q = _ours(folders["qwen"])  # no BOS: an empty prompt starts after the document separator
    res = generate(_always(q, q.separator_id), q, "", GenerationConfig(max_new_tokens=3))
    assert res.prompt_ids == [q.separator_id] and res.stop_reason == "eos"


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_data_gives_the_hand_computed_bits_per_byte(
    folders: dict[str, Path], kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmkit.cli import main

    tok, auto = _ours(folders[kind]), _auto(folders[kind])
    docs = [["Hello world, said the fox.", "café naïve 😀\nnew line"], ["  spaced out text ", "中文 and more"]]
    files = []
    for i, group in enumerate(docs):
        f = tmp_path / f"part{i}.jsonl"
        f.write_text("".join(json.dumps({"text": t}) + "\n" for t in group), encoding="utf-8")
        files.append(str(f))
    stream: list[int] = []
    texts = [t for group in docs for t in group]
    for t in texts:
        stream += auto(t)["input_ids"] + [tok.separator_id]
    cfg = ModelConfig(
        family="decoder", vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_seq_len=len(stream) - 1
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = save_checkpoint(tmp_path / "ckpt", model, cfg, tokenizer=tok)
    # by hand: one window is the whole stream; every token but the first is scored
    x = torch.tensor([stream])
    with torch.no_grad():
        nats = float(torch.nn.functional.cross_entropy(model(x[:, :-1])[0].double(), x[0, 1:], reduction="sum"))
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    if not tok.adds_bos:  # the first token is read, not predicted: its bytes are not scored
        nbytes -= len(auto.decode(stream[:1]).encode("utf-8"))
    want = nats / math.log(2) / nbytes
    rep = evaluate_checkpoint(ckpt, data=files, batches=1, batch_size=1)
    assert rep["bits_per_byte"] == pytest.approx(want, rel=1e-5)
    assert main(["evaluate", str(ckpt), "--data", *files, "--batches", "1", "--batch-size", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bits_per_byte"] == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------- a role missing: one line


def _one_line(e: pytest.ExceptionInfo[LmkitError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_each_missing_role_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    tok = _byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False))
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")  # no config files: no roles at all
    bare = _ours(folder)
    assert bare.eos_ids == () and bare.bos_id == -1
    with pytest.raises(LmkitError) as e:
        pack([Document(id="a", text="some text", source="t")], bare, tmp_path / "shards", show_progress=False)
    assert "no separator token" in _one_line(e) and "--eos-token" in str(e.value)
    model = _always(bare, 5)
    with pytest.raises(LmkitError) as e:
        generate(model, bare, "", GenerationConfig(max_new_tokens=2))
    assert "no bos token" in _one_line(e) and "--bos-token" in str(e.value)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, model.cfg, tokenizer=bare)
    (tmp_path / "t.txt").write_text("text to score " * 20, encoding="utf-8")
    with pytest.raises(LmkitError) as e:
        evaluate_checkpoint(ckpt, data=[str(tmp_path / "t.txt")])
    assert "no separator token" in _one_line(e) and "--eos-token" in str(e.value)
    named = _ours(folder, eos="<|endoftext|>") if bare.hf.token_to_id("<|endoftext|>") else None
    assert named is None  # the bare tokenizer has no such token: naming it is refused below
    with pytest.raises(LmkitError) as e:
        _ours(folder, eos="<|endoftext|>")
    assert "--eos-token" in _one_line(e) and "not in the tokenizer's vocabulary" in str(e.value)
    with pytest.raises(LmkitError) as e:
        import_tokenizer(folder, None, bare.vocab_size - 1)
    assert "rows" in _one_line(e)


def test_a_tokenizer_smaller_than_the_embedding_is_accepted(folders: dict[str, Path]) -> None:
    tok = import_tokenizer(folders["qwen"], None, 10_000)  # Qwen2.5: 151,665 tokens for 151,936 rows
    assert tok.vocab_size < 10_000


# --------------------------------------------------------------------------- import-hf and export


def _llama_with(folder: Path, tokenizer_folder: Path, rows: int) -> Path:
    """A tiny LlamaForCausalLM saved by transformers, with more embedding rows than tokens, and the
    tokenizer files of ``tokenizer_folder`` beside it (config.json: the model's own, with its ids)."""
    import shutil

    tok_cfg = json.loads((tokenizer_folder / "config.json").read_text())
    c = transformers.LlamaConfig(
        vocab_size=rows,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        **tok_cfg,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(c).eval().save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (tokenizer_folder / name).is_file():
            shutil.copy(tokenizer_folder / name, folder / name)
    return folder


def test_import_hf_keeps_the_models_tokenizer_and_roles(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmkit.cli import main
    from lmkit.ship.import_hf import import_hf

    src = folders["llama3"]
    ref = _ours(src)
    hf = _llama_with(tmp_path / "hf", src, rows=ref.vocab_size + 11)  # padded rows, as Qwen2.5's
    import_hf(hf, tmp_path / "ckpt")
    tok = load_tokenizer(tmp_path / "ckpt")
    assert tok.roles == ref.roles and tok.sha256 == ref.sha256 and tok.to_str() == ref.to_str()
    assert ROLES_FILE in load_meta(tmp_path / "ckpt")["sha256"]
    assert load_meta(tmp_path / "ckpt")["tokenizer_sha256"] == tok.sha256
    # a role named on the command line replaces what the files say
    assert main(["import-hf", str(hf), "--out", str(tmp_path / "eot"), "--eos-token", "<|eot_id|>"]) == 0
    capsys.readouterr()
    eot = load_tokenizer(tmp_path / "eot")
    assert eot.eos_ids == (eot.hf.token_to_id("<|eot_id|>"),) == (eot.separator_id,)
    with pytest.raises(LmkitError) as e:
        import_hf(hf, tmp_path / "bad", bos_token="<nope>")
    assert "--bos-token" in _one_line(e)


def test_export_writes_the_models_own_roles_back(folders: dict[str, Path], tmp_path: Path) -> None:
    from lmkit.ship.export_hf import generation_config, tokenizer_files

    tok = _ours(folders["llama3"])
    files = tokenizer_files(tok, 64)
    folder = tmp_path / "export"
    folder.mkdir()
    tok.save(folder, with_roles=False)
    assert not (folder / ROLES_FILE).exists()
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data), encoding="utf-8")
    cfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_seq_len=32)
    (folder / "generation_config.json").write_text(json.dumps(generation_config(cfg, tok)), encoding="utf-8")
    assert files["tokenizer_config.json"]["bos_token"] == "<|begin_of_text|>"
    assert files["tokenizer_config.json"]["eos_token"] == "<|end_of_text|>"
    auto = _auto(folder)
    assert auto("Hello world")["input_ids"] == tok.prompt_ids("Hello world")  # BOS added once, as the model's own
    assert auto.eos_token == "<|end_of_text|>" and auto.bos_token == "<|begin_of_text|>"
    back = _ours(folder)  # imported again: the same roles, so the same hash
    assert back.roles == tok.roles and back.sha256 == tok.sha256


# --------------------------------------------------------------------------- icl and serve


@pytest.mark.parametrize("kind", ["llama3", "sentencepiece", "sentencepiece_legacy", "gpt2"])
def test_icl_splits_context_and_answer_where_the_text_does(folders: dict[str, Path], kind: str) -> None:
    from lmkit.lab.icl.models import LocalLM

    tok, auto = _ours(folders[kind]), _auto(folders[kind])
    cfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_seq_len=64)
    torch.manual_seed(0)
    lm = LocalLM(build_model(cfg).eval(), tok)
    context, answer = "The answer is", " yes"
    enc = auto(context + answer, return_offsets_mapping=True)
    ids, n_ctx = lm.split(context, answer)
    assert ids == enc["input_ids"]  # BOS first where the model's tokenizer adds it
    assert n_ctx == sum(1 for _, end in enc["offset_mapping"] if end <= len(context))
    with torch.no_grad():
        logp = lm.model(torch.tensor([ids]))[0].double().log_softmax(-1)
    want = sum(float(logp[t - 1, ids[t]]) for t in range(n_ctx, len(ids)))
    ((got, n),) = lm.loglikelihood([(context, answer)])
    assert n == len(ids) - n_ctx and got == pytest.approx(want, abs=1e-5)


def test_serve_echoes_bos_and_stops_on_any_eos(folders: dict[str, Path]) -> None:
    import httpx

    from lmkit.serve.batcher import Engine
    from lmkit.serve.local import background_server

    tok = _ours(folders["llama3"])
    cfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_seq_len=64)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    text = "Hello world"
    ids = tok.prompt_ids(text)
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0].log_softmax(-1)
    eng = Engine(model, tok)
    try:
        with background_server(eng, "tiny") as base:
            body = {"model": "tiny", "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0}
            lp = httpx.post(base + "/v1/completions", json=body).json()["choices"][0]["logprobs"]
    finally:
        eng.close()
    assert lp["tokens"][0] == "<|begin_of_text|>" and lp["token_logprobs"][0] is None
    assert lp["text_offset"][:2] == [0, 0]  # BOS is no character of the text
    assert max(abs(lp["token_logprobs"][t] - float(logp[t - 1, ids[t]])) for t in range(1, len(ids))) < 1e-5
    eot = tok.hf.token_to_id("<|eot_id|>")
    eng = Engine(_always(tok, eot), tok)
    try:
        with background_server(eng, "tiny") as base:
            body = {"model": "tiny", "prompt": text, "max_tokens": 5, "temperature": 0}
            r = httpx.post(base + "/v1/completions", json=body).json()
    finally:
        eng.close()
    assert r["choices"][0]["finish_reason"] == "stop" and r["choices"][0]["text"] == ""
    assert r["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("kind", ["sentencepiece", "sentencepiece_legacy", "llama3"])
def test_evaluate_on_packed_shards_counts_no_byte_for_sentencepieces_leading_space(
    folders: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    tok = _ours(folders[kind])
    texts = ["Hello world, said the fox.", "café naïve\nnew line", "the licensee shall keep the records"]
    pack([Document(id=f"d{i}", text=t, source="t") for i, t in enumerate(texts)], tok, tmp_path / "s", val_fraction=0.0)
    stream = np.concatenate([np.asarray(a) for a in TokenShards(tmp_path / "s" / "train")._arrays]).tolist()
    cfg = ModelConfig(
        family="decoder", vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_seq_len=len(stream) - 1
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = save_checkpoint(tmp_path / "ckpt", model, cfg, tokenizer=tok)
    x = torch.tensor([stream])
    with torch.no_grad():
        nats = float(torch.nn.functional.cross_entropy(model(x[:, :-1])[0].double(), x[0, 1:], reduction="sum"))
    want = nats / math.log(2) / sum(len(t.encode("utf-8")) for t in texts)  # BOS first: every text byte is scored
    rep = evaluate_checkpoint(ckpt, data=[str(tmp_path / "s" / "train")], batches=1, batch_size=1)
    assert rep["bits_per_byte"] == pytest.approx(want, rel=1e-5)


def test_padding_rows_of_the_embedding_are_never_generated(folders: dict[str, Path]) -> None:
    """Qwen2.5 has 151,936 rows for 151,665 tokens: a row past the tokenizer is no token to emit."""
    import httpx

    from lmkit.serve.batcher import Engine
    from lmkit.serve.local import background_server

    tok = _ours(folders["qwen"])
    model = _always(tok, tok.vocab_size + 3, rows=tok.vocab_size + 8)  # the head favours a padding row
    for cfg in (GenerationConfig(max_new_tokens=4), GenerationConfig(max_new_tokens=4, do_sample=True, seed=1)):
        res = generate(model, tok, "Hello", cfg)
        assert len(res.token_ids) == 4 and max(res.token_ids) < tok.vocab_size
    eng = Engine(model, tok)
    try:
        with background_server(eng, "tiny") as base:
            for temperature in (0, 1):
                body = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": temperature, "seed": 1}
                r = httpx.post(base + "/v1/completions", json=body).json()
                assert r["choices"][0]["finish_reason"] == "length", r
    finally:
        eng.close()


@pytest.mark.parametrize("kind", ["llama3", "sentencepiece", "qwen"])
def test_allow_special_reads_the_tokenizers_own_special_tokens(folders: dict[str, Path], kind: str) -> None:
    tok, auto = _ours(folders[kind]), _auto(folders[kind])
    eos = tok.hf.id_to_token(tok.eos_id)
    text = f"first part{eos}second part"
    assert tok.encode(text, allow_special=True) == auto(text, add_special_tokens=False)["input_ids"]
    assert tok.eos_id in tok.encode(text, allow_special=True) and tok.eos_id not in tok.encode(text)


def test_card_names_the_models_own_roles(folders: dict[str, Path], tmp_path: Path) -> None:
    from lmkit.ship.card.render import card_facts, render_card

    tok = _ours(folders["llama3"])
    cfg = ModelConfig(family="decoder", vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_seq_len=32)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_model(cfg), cfg, tokenizer=tok, meta={})
    facts = card_facts(ckpt)["tokenizer"]
    assert facts["adds_bos"] and facts["bos_token"] == "<|begin_of_text|>"
    assert facts["eos_tokens"] == ["<|end_of_text|>", "<|eot_id|>"] and facts["separator_token"] == "<|end_of_text|>"
    assert "puts BOS (`<|begin_of_text|>`) before the text" in render_card(ckpt)
