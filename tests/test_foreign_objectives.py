"""Encoder and encoder-decoder tokenizers and the objectives on them (issue 28).

Three tokenizers are trained here with ``tokenizers`` in the shapes real models have and saved
through ``transformers``: BERT's WordPiece (its normalizer, ``[CLS] A [SEP]``), T5's SentencePiece
unigram (Metaspace, 100 sentinels appended so that ``<extra_id_0>`` is the highest id) and
RoBERTa/BART's byte-level BPE (``<s> <pad> </s> <unk>`` first, ``<mask>`` last). lmkit's ids must
equal ``AutoTokenizer``'s with and without the post-processor's tokens, bytes must join to the
text's, the roles (mask, cls/sep, sentinels, decoder start) must be the model's own, and the
objectives must use them: MLM never touches a special token nor draws one (or a padding row of
the embedding), span corruption writes the model's own sentinels, and BART's text infilling
matches its definition, counted.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from lmkit.config import ModelConfig, model_config_from_dict
from lmkit.config_io import ConfigError
from lmkit.errors import LmkitError
from lmkit.infer.fillmask import encode_with_masks, fill_mask
from lmkit.models import build_model
from lmkit.objectives import (
    IGNORE_INDEX,
    INFILL_POISSON_MEAN,
    SpecialIds,
    infill_batch,
    make_batch,
    mlm_batch,
    permute_sentences,
    span_corruption_batch,
    window_length,
)
from lmkit.tokenizer import Tokenizer, import_tokenizer
from lmkit.train.finetune.data import encode_text, encode_words

transformers = pytest.importorskip("transformers")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Café, naïve, résumé; Straße!",
    "Line one. Line two?\n\nA third line with  double  spaces and\ttabs.",
    "Numbers 12345 and 3.14159, emoji 😀 and accents àéîõü.",
    "The licensee shall keep the records for seven years after the term. Is that so? Yes!",
] * 30
TEXTS = [
    "Hello world",
    "The quick brown fox.",
    " leading space",
    "trailing space ",
    "café naïve résumé Ünïcödé",
    "emoji 😀🎉 and 👍🏽 here",
    "line one\nline two\n\nthree\n",
    "tabs\tand  double  spaces",
    "中文文本 日本語",
    "Is that so? Yes! The end.",
]
SENTINELS = [f"<extra_id_{i}>" for i in range(100)]


def _save(tok: HFTokenizer, folder: Path, specials: dict[str, Any], config: dict[str, Any]) -> Path:
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _wordpiece(folder: Path) -> Path:
    """bert-base-uncased's shape: [PAD] 0, then [unused*] rows, [UNK] [CLS] [SEP] [MASK] after them (BERT's
    100..103), the learned pieces; BERT's normalizer and pre-tokenizer, [CLS] A [SEP]."""
    probe = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    probe.normalizer = normalizers.BertNormalizer(lowercase=True)
    probe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    probe.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, show_progress=False))
    layout = ["[PAD]", *(f"[unused{i}]" for i in range(10)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(layout)}
    for t, _ in sorted(probe.get_vocab().items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    tok = HFTokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    names = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    return _save(tok, folder, {**names, "mask_token": "[MASK]"}, {"pad_token_id": 0})


def _unigram(folder: Path) -> Path:
    """t5-small's shape: <pad> </s> <unk> at 0..2, a unigram with Metaspace, then <extra_id_99> .. <extra_id_0>
    appended (so <extra_id_0> is the highest id), and ``$A </s>``."""
    tok = HFTokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(SENTINELS[::-1])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    names = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "additional_special_tokens": SENTINELS}
    return _save(tok, folder, names, {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0})


def _byte_bpe(folder: Path) -> Path:
    """roberta-base's and bart-base's shape: <s> <pad> </s> <unk> at 0..3, byte-level BPE, <mask> last
    (stripping the space before it), ``<s> A </s>``; BART's config starts decoding with </s>."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    names = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>"}
    config = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2}
    return _save(tok, folder, {**names, "pad_token": "<pad>", "mask_token": "<mask>"}, config)


KINDS = {"wordpiece": _wordpiece, "unigram": _unigram, "byte_bpe": _byte_bpe}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("enc_tokenizers")
    return {k: make(root / k) for k, make in KINDS.items()}


@pytest.fixture(scope="module")
def toks(folders: dict[str, Path]) -> dict[str, Tokenizer]:
    return {k: import_tokenizer(f, None, 10_000) for k, f in folders.items()}


def _auto(folder: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(str(folder))


# --------------------------------------------------------------------------- ids, bytes, roles


@pytest.mark.parametrize("kind", list(KINDS))
def test_ids_equal_autotokenizer_with_and_without_the_templates_tokens(
    folders: dict[str, Path], toks: dict[str, Tokenizer], kind: str
) -> None:
    ours, theirs = toks[kind], _auto(folders[kind])
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs(text, add_special_tokens=False)["input_ids"], (kind, text)
        assert ours.wrap(ids) == theirs(text)["input_ids"], (kind, text)
        assert encode_text(ours, text, 512) == theirs(text)["input_ids"]  # fine-tuning reads what the model read
    assert ours.fast == (kind == "byte_bpe"), ours.fast_reason  # RoBERTa's is GPT-2's shape: tiktoken, checked


@pytest.mark.parametrize("kind", list(KINDS))
def test_bytes_of_the_tokens_join_to_the_texts_own_bytes(toks: dict[str, Tokenizer], kind: str) -> None:
    tok = toks[kind]
    for text in TEXTS:
        ids, pieces = tok.encode_with_bytes(text)
        assert ids == tok.encode(text) and b"".join(pieces) == text.encode("utf-8"), (kind, text)
    if kind == "wordpiece":  # a word's first token stands for the space before it, a ## continuation for itself
        ids = tok.encode("hello world")
        words = [tok.hf.id_to_token(i) for i in ids]
        assert any(w.startswith("##") for w in words) and tok.space_before_text
        assert b"".join(tok.token_bytes(i) for i in ids) == b" hello world"
        cont = next(i for i, w in zip(ids, words) if w.startswith("##"))
        assert tok.token_bytes(cont) == tok.hf.id_to_token(cont)[2:].encode()
    if kind == "unigram":  # ▁ is a space, and the first one is no byte of the text
        ids = tok.encode("the term")
        assert b"".join(tok.token_bytes(i) for i in ids) == b" the term" and tok.space_before_text


def test_roles_are_the_models_own(folders: dict[str, Path], toks: dict[str, Tokenizer], tmp_path: Path) -> None:
    bert = toks["wordpiece"]
    ids = {t: bert.hf.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id) == tuple(ids.values())
    assert bert.mask_text == "[MASK]" and bert.separator_id == ids["[SEP]"]  # documents end as BERT's texts do
    assert bert.template == ([ids["[CLS]"]], [ids["[SEP]"]])
    t5 = toks["unigram"]
    top = t5.vocab_size - 1
    assert t5.sentinel_ids == list(range(top, top - 100, -1))  # <extra_id_0> is the highest id, counting down
    assert [t5.hf.id_to_token(i) for i in t5.sentinel_ids[:2]] == ["<extra_id_0>", "<extra_id_1>"]
    assert (t5.pad_id, t5.eos_ids, t5.unk_id, t5.decoder_start_id, t5.mask_id) == (0, (1,), 2, 0, -1)
    assert t5.template == ([], [1])
    bart = toks["byte_bpe"]
    assert (bart.bos_id, bart.pad_id, bart.eos_ids, bart.unk_id, bart.decoder_start_id) == (0, 1, (2,), 3, 2)
    assert bart.mask_id == bart.vocab_size - 1 and bart.mask_text == "<mask>" and (bart.cls_id, bart.sep_id) == (0, 2)
    assert bart.template == ([0], [2])
    # sentinels without the files' list: found in the vocabulary by name, in <extra_id_i> order
    bare = tmp_path / "t5"
    shutil.copytree(folders["unigram"], bare)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("extra_special_tokens", None)
    cfg.pop("additional_special_tokens", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert import_tokenizer(bare, None, 10_000).sentinel_ids == t5.sentinel_ids
    # the roles travel with the tokenizer
    t5.save(tmp_path / "saved")
    back = Tokenizer.load(tmp_path / "saved")
    assert back.roles == t5.roles and back.sentinel_ids == t5.sentinel_ids


# --------------------------------------------------------------------------- masked language modeling


def _windows(tok: Tokenizer, batch: int, length: int, seed: int) -> torch.Tensor:
    """Windows of real text packed as the model's tokenizer wraps it, with every special token of the
    tokenizer sprinkled in (padding, the mask itself, sentinels...)."""
    stream: list[int] = []
    for text in CORPUS[:8]:
        stream += tok.wrap(tok.encode(text))
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, len(stream) - length, (batch,), generator=g)
    base = torch.tensor(stream)
    w = torch.stack([base[s : s + length] for s in start.tolist()])
    special = torch.tensor(sorted(tok.special_ids))
    sprinkle = torch.rand(w.shape, generator=g) < 0.1
    return torch.where(sprinkle, special[torch.randint(0, len(special), w.shape, generator=g)], w)


def _binomial_ok(hits: int, n: int, p: float, z: float = 5.0) -> bool:
    return abs(hits - n * p) <= z * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("kind", ["wordpiece", "byte_bpe"])
def test_mlm_over_10000_batches_never_touches_a_special_token(toks: dict[str, Tokenizer], kind: str) -> None:
    tok = toks[kind]
    sp = tok.special_ids_for_objectives()
    special = torch.tensor(sorted(tok.special_ids))
    ordinary = sorted(set(range(tok.vocab_size)) - set(tok.special_ids))
    assert sp.special and tok.mask_id in sp.special  # a foreign layout: specials named one by one
    n_batches = 10_000
    w = _windows(tok, 4, 32, seed=0)
    outs = [mlm_batch(w, sp, torch.Generator().manual_seed(seed)) for seed in range(n_batches)]
    inp = torch.stack([o["input_ids"] for o in outs])  # (10000, 4, 32)
    lab = torch.stack([o["labels"] for o in outs])
    w = w.expand_as(inp)
    is_special = torch.isin(w, special)
    pick = lab != IGNORE_INDEX
    assert not (pick & is_special).any() and torch.equal(inp[is_special], w[is_special])
    assert torch.equal(inp[~pick], w[~pick]) and torch.equal(lab[pick], w[pick])
    replaced = pick & (inp != w) & (inp != tok.mask_id)
    drawn = torch.bincount(inp[replaced], minlength=tok.vocab_size + 64)  # the model may have more rows
    chosen, eligible = int(pick.sum()), int((~is_special).sum())
    masked, randomised = int((pick & (inp == tok.mask_id)).sum()), int(replaced.sum())
    unchanged = int((pick & (inp == w)).sum())
    # replacements: every ordinary token and nothing else (no special, no row past the tokenizer)
    assert drawn[special].sum() == 0 and drawn[tok.vocab_size :].sum() == 0
    assert (drawn[ordinary] > 0).all()
    assert _binomial_ok(chosen, eligible, 0.15)
    same = 1 / len(ordinary)  # a random draw equal to the original shows as unchanged
    assert _binomial_ok(masked, chosen, 0.8)
    assert _binomial_ok(randomised, chosen, 0.1 * (1 - same))
    assert _binomial_ok(unchanged, chosen, 0.1 + 0.1 * same)


def test_lmkits_own_tokenizer_draws_the_same_batches_as_before() -> None:
    """A run of lmkit's own layout resumes onto the very same masks it always drew."""
    own = SpecialIds(pad=0, bos=1, eos=2, mask=4, sentinels=tuple(range(5, 105)), vocab_size=500, n_special=105)
    listed = SpecialIds(pad=0, bos=1, eos=2, mask=4, vocab_size=500, special=tuple(range(105)))
    w = torch.randint(0, 500, (8, 64), generator=torch.Generator().manual_seed(1))
    a = mlm_batch(w, own, torch.Generator().manual_seed(3))
    b = mlm_batch(w, listed, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    chosen = (torch.rand(w.shape, generator=g) < 0.15) & (w >= 105)
    how = torch.rand(w.shape, generator=g)
    rnd = torch.randint(105, 500, w.shape, generator=g)  # the draw lmkit always made
    want = torch.where(chosen & (how < 0.8), 4, torch.where(chosen & (how >= 0.8) & (how < 0.9), rnd, w))
    assert torch.equal(a["input_ids"], want) and torch.equal(b["input_ids"], want)


# --------------------------------------------------------------------------- span corruption (T5)


def test_span_corruption_writes_the_models_own_sentinels(toks: dict[str, Tokenizer]) -> None:
    tok = toks["unigram"]
    sp = tok.special_ids_for_objectives()
    cfg = ModelConfig(family="encdec", vocab_size=tok.vocab_size + 28, max_seq_len=64, max_target_len=24)
    assert cfg.objective == "span"
    w = _windows(tok, 16, window_length(cfg), seed=1)
    w = torch.where(torch.isin(w, torch.tensor(tok.sentinel_ids)), tok.eos_id, w)  # text has no sentinels
    b = make_batch(cfg, w, sp, torch.Generator().manual_seed(0))
    top = tok.vocab_size - 1
    for row in range(16):
        target = [t for t in b["labels"][row].tolist() if t != IGNORE_INDEX]
        assert target[0] == top == tok.hf.token_to_id("<extra_id_0>")  # the model's own <extra_id_0>
        used = [t for t in target if t in tok.sentinel_ids]
        assert used == list(range(top, top - len(used), -1))  # <extra_id_0>, <extra_id_1>, ...: counting down
        inp = b["input_ids"][row].tolist()
        assert [t for t in inp if t in tok.sentinel_ids] == used
        assert b["decoder_input_ids"][row, 0] == tok.decoder_start_id == 0  # T5 starts decoding with <pad>
    few = SpecialIds(pad=0, bos=-1, eos=1, mask=-1, sentinels=sp.sentinels[:3], vocab_size=tok.vocab_size)
    with pytest.raises(LmkitError) as e:  # a window of 200 tokens needs 10 sentinels
        span_corruption_batch(_windows(tok, 2, 200, seed=2), few, torch.Generator().manual_seed(0), 256, 64)
    assert "\n" not in str(e.value) and "the tokenizer has 3" in str(e.value)


# --------------------------------------------------------------------------- text infilling (BART)


def _renewal_counts(n: int, lam: float, top: int) -> list[float]:
    """Expected number, per window, of non-final span lengths equal to j (j < top), when lengths are drawn
    from Poisson(lam) until they sum to n: p_j times the expected number of partial sums below n - j."""
    p = [math.exp(-lam) * lam**j / math.factorial(j) for j in range(n + 1)]
    u = [1 / (1 - p[0])]  # expected visits of the partial sums to s (zero-length draws stay put)
    for s in range(1, n + 1):
        u.append(sum(p[j] * u[s - j] for j in range(1, s + 1)) / (1 - p[0]))
    return [p[j] * sum(u[: n - j]) for j in range(top)]


def test_infilling_matches_its_definition_counted() -> None:
    """30% of each window hidden, each span one mask, spans apart, lengths Poisson(3) (drawn until they
    reach the 30%, the last cut to fit)."""
    batch, length, first = 4000, 127, 1000
    sp = SpecialIds(pad=0, bos=-1, eos=2, mask=4, vocab_size=2000, n_special=5, decoder_start=2)
    w = (torch.arange(length) + first).expand(batch, length).contiguous()  # one sentence of distinct tokens
    b = infill_batch(w, sp, torch.Generator().manual_seed(0), 128, 128)
    n = round(0.3 * length)
    inner: list[int] = []
    zero_spans = spans = 0
    for row, mask in zip(b["input_ids"].tolist(), b["attention_mask"].tolist()):
        real = row[: sum(mask)]
        assert real[-1] == sp.eos and all(t == sp.pad for t in row[len(real) :])
        lengths, prev, pending = [], first - 1, 0
        for t in [*real[:-1], first + length]:  # the end of the window closes a trailing span
            if t == sp.mask:
                pending += 1
                continue
            assert pending <= 1  # never two masks in a row: spans are apart
            gap = t - prev - 1
            assert gap == 0 or pending == 1  # every hidden token is behind a mask
            if pending:
                lengths.append(gap)
            prev, pending = t, 0
        assert sum(lengths) == n and real.count(sp.mask) == len(lengths)  # 30% hidden, one mask per span
        inner += lengths[:-1]  # the last span was cut to fit
        spans += len(lengths)
        zero_spans += lengths.count(0)
    assert zero_spans > 0  # empty spans insert a mask
    want = _renewal_counts(n, INFILL_POISSON_MEAN, 10)
    for j, expected in enumerate(want):
        got = inner.count(j)
        assert abs(got - batch * expected) <= 5 * math.sqrt(batch * expected) + 1, (j, got, batch * expected)
    # the decoder writes the original window and EOS, after BART's start token
    assert torch.equal(b["labels"][:, :length], w) and (b["labels"][:, length] == sp.eos).all()
    assert (b["labels"][:, length + 1 :] == IGNORE_INDEX).all()
    assert (b["decoder_input_ids"][:, 0] == 2).all() and torch.equal(b["decoder_input_ids"][:, 1 : length + 1], w)


def test_sentence_permutation_shuffles_sentences_between_special_tokens() -> None:
    stop, sep = 9, 2
    sp = SpecialIds(pad=0, bos=1, eos=sep, mask=4, vocab_size=100, n_special=5, full_stops=(stop,))
    # doc A: three sentences; the separator; doc B: two sentences, the last without a full stop
    a = [[10, 11, stop], [20, stop], [30, 31, 32, stop]]
    bdoc = [[40, stop], [50, 51]]
    row = [t for s in a for t in s] + [sep] + [t for s in bdoc for t in s]
    w = torch.tensor(row).expand(6000, len(row)).contiguous()
    out = permute_sentences(w, sp, torch.Generator().manual_seed(0))
    at = len([t for s in a for t in s])
    assert (out[:, at] == sep).all()  # special tokens stay; no sentence crosses them
    orders: dict[tuple[int, ...], int] = {}
    for r in out.tolist():
        first, second = r[:at], r[at + 1 :]
        starts = tuple(t for t in first if t in (10, 20, 30))
        pieces = [s for st in starts for s in a if s[0] == st]
        assert [t for s in pieces for t in s] == first  # whole sentences, in some order
        assert second in ([40, stop, 50, 51], [50, 51, 40, stop])
        orders[starts] = orders.get(starts, 0) + 1
    assert len(orders) == 6 and all(_binomial_ok(c, 6000, 1 / 6) for c in orders.values())  # every order alike


def test_infill_is_an_encdec_setting_and_learns(toks: dict[str, Tokenizer]) -> None:
    tok = toks["byte_bpe"]
    cfg = model_config_from_dict(
        {"family": "encdec", "objective": "infill", "vocab_size": tok.vocab_size + 12, "d_model": 32}
        | {"n_layers": 1, "n_heads": 2, "max_seq_len": 48, "max_target_len": 48}
    )
    assert ModelConfig(family="encdec").objective == "span" and window_length(cfg) == 47
    with pytest.raises(ConfigError, match="model.objective must be mlm for a encoder, got 'infill'"):
        model_config_from_dict({"family": "encoder", "objective": "infill"})
    sp = tok.special_ids_for_objectives()
    assert sp.full_stops and all(tok.token_bytes(i).strip() in (b".", b"?", b"!") for i in sp.full_stops)
    stream: list[int] = []
    for text in CORPUS[:24]:
        stream += tok.wrap(tok.encode(text))
    w = torch.tensor(stream[: 8 * 47]).view(8, 47)
    g = torch.Generator().manual_seed(0)
    b = make_batch(cfg, w, sp, g)
    assert set(b) == {"input_ids", "attention_mask", "decoder_input_ids", "labels"}
    assert (b["decoder_input_ids"][:, 0] == tok.eos_id).all()  # BART starts decoding with </s>
    assert (b["input_ids"] == tok.mask_id).any() and torch.equal(b["labels"][:, :47], w)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model.loss(make_batch(cfg, w, sp, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


# --------------------------------------------------------------------------- fill-mask and fine-tuning


@pytest.mark.parametrize("kind", ["wordpiece", "byte_bpe"])
def test_fill_mask_reads_the_models_own_mask(folders: dict[str, Path], toks: dict[str, Tokenizer], kind: str) -> None:
    tok, auto = toks[kind], _auto(folders[kind])
    text = f"The quick {tok.mask_text} fox jumps over the {tok.mask_text}."
    ids, positions, _ = encode_with_masks(tok, text, tok.mask_text or "")
    assert ids == auto(text)["input_ids"]  # as transformers' fill-mask pipeline reads it
    assert [i for i, t in enumerate(ids) if t == tok.mask_id] == positions and len(positions) == 2
    cfg = ModelConfig(family="encoder", vocab_size=tok.vocab_size + 8, d_model=16, n_layers=1, n_heads=2)
    torch.manual_seed(0)
    res = fill_mask(build_model(cfg).eval(), tok, text, top_k=3)  # no mask text given: the model's own
    assert [m.position for m in res.masks] == positions
    special = tok.special_ids
    assert all(c.token_id < tok.vocab_size and c.token_id not in special for m in res.masks for c in m.candidates)
    with pytest.raises(LmkitError, match="has no"):
        fill_mask(build_model(cfg).eval(), tok, "no mask here")


def test_token_classification_words_sit_inside_the_models_template(toks: dict[str, Tokenizer]) -> None:
    tok = toks["wordpiece"]
    ids, labels, kept = encode_words(tok, ["The", "quick", "fox"], [1, 2, 3], 64)
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and kept == 3
    assert ids == tok.wrap(tok.encode("The quick fox"))
    assert [lab for lab in labels if lab != IGNORE_INDEX] == [1, 2, 3] and labels[0] == labels[-1] == IGNORE_INDEX


def test_an_imported_bert_fills_masks_as_transformers_pipeline_does(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny BertForMaskedLM with the WordPiece tokenizer, imported: top-5 ids equal the pipeline's, and
    the probabilities too once the pipeline's are renormalised over ordinary tokens (lmkit never
    offers a special token); the server and the command find [MASK] themselves."""
    import httpx

    from lmkit.cli import main
    from lmkit.models.checkpoint import load_model, load_tokenizer
    from lmkit.serve.batcher import Engine
    from lmkit.serve.local import background_server
    from lmkit.ship.import_hf import import_hf

    auto = _auto(folders["wordpiece"])
    c = transformers.BertConfig(
        vocab_size=len(auto), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    bert = transformers.BertForMaskedLM(c).eval()
    with torch.no_grad():
        for p in bert.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)  # biases and norms away from 0 and 1
        bert.cls.predictions.decoder.weight.mul_(5)
    bert.save_pretrained(str(tmp_path / "hf"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folders["wordpiece"] / name, tmp_path / "hf" / name)
    import_hf(tmp_path / "hf", tmp_path / "ckpt")
    tok, model = load_tokenizer(tmp_path / "ckpt"), load_model(tmp_path / "ckpt")
    text = "The quick [MASK] fox jumps over the lazy dog."
    theirs = transformers.pipeline("fill-mask", model=bert, tokenizer=auto, top_k=5)(text)
    with torch.no_grad():
        enc = auto(text, return_tensors="pt")
        logits = bert(**enc).logits[0, enc["input_ids"][0].tolist().index(tok.mask_id)]
    ordinary = 1 - float(logits.softmax(-1)[sorted(tok.special_ids)].sum())
    ours = fill_mask(model, tok, text, top_k=5).masks[0].candidates
    assert [c.token_id for c in ours] == [d["token"] for d in theirs]
    assert [c.probability for c in ours] == pytest.approx([d["score"] / ordinary for d in theirs], rel=1e-4)
    eng = Engine(model, tok)
    try:
        with background_server(eng, "bert") as base:
            fm = httpx.post(base + "/v1/fill-mask", json={"text": text, "top_k": 5}).json()
    finally:
        eng.close()
    assert [c["token_id"] for c in fm["masks"][0]["candidates"]] == [d["token"] for d in theirs]
    assert main(["fill-mask", str(tmp_path / "ckpt"), text, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["token_id"] for c in out["masks"][0]["candidates"]] == [d["token"] for d in theirs]
