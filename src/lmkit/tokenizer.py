"""The tokenizer: train, save, load and measure a byte-level BPE (Hugging Face ``tokenizers``).

What this module owns:

* :func:`train_tokenizer` trains a byte-level BPE whose first ids are the special tokens all
  three model families need, always in the same order so that their ids are stable:
  ``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3, ``[MASK]``=4, ``<extra_id_0..99>``=5..104.
  The 256 byte tokens follow, then the learned merges. Because every byte is a token, any
  string can be encoded and ``decode(encode(s)) == s`` exactly (``<unk>`` exists for the
  families' sake but byte-level BPE never produces it). Every path that trains one (``lmkit
  tokenizer train``, ``lmkit adapt``) asks it for :data:`MIN_VOCAB` to :data:`MAX_VOCAB` tokens:
  the trainer reserves memory for each token asked for before it reads any text.
* :class:`Tokenizer`, lmkit's wrapper: encode/decode, special ids, a readable form of one token,
  save/load of ``tokenizer.json`` (the Hugging Face format, so an export can hand the same file
  to ``transformers.PreTrainedTokenizerFast``) and a ``sha256`` that identifies it.
* :func:`fertility` and :func:`split_words`: how many tokens a word costs and how words are cut,
  and :func:`tokenizer_stats`, both for one tokenizer (the ``lmkit tokenizer train|stats``
  commands that print them are in :mod:`lmkit.cli.data`).
* Where ``lmkit tokenizer train`` writes (:func:`check_tokenizer_out`, before any training) and
  how it marks the file as lmkit's (:func:`save_stamped`): a sidecar stamp beside
  ``tokenizer.json``, since the tokenizers library refuses any key it does not know inside it.

Text never turns into special tokens by accident: ``encode`` treats a literal ``"</s>"`` in the
text as ordinary characters (ids for special tokens are added by the caller, e.g. the packer
appends ``eos_id``). ``encode(text, allow_special=True)`` is there for prompts that mean them,
such as ``"The <extra_id_0> sat"`` for span infilling.

Fast encoding, and why it is written by hand: Hugging Face's ``encode_batch`` is the slow part
of packing, and ``tiktoken`` runs the same byte-level BPE several times faster.
A tiktoken ``Encoding`` is built from this tokenizer's vocabulary: a token's rank is its id,
and ``BpeTrainer`` assigns ids in merge order, so "merge the pair whose result has the lowest
id" (tiktoken) follows the same order as "apply the earliest merge" (Hugging Face); the
pre-tokenisation regex is GPT-2's, which is what the ``ByteLevel`` pre-tokenizer uses. That
argument is checked rather than trusted: the fast path is switched on only when the tokenizer
has exactly this shape (byte-level, regex pre-tokenizer, no normalizer, ids increasing with
merge order, all 256 bytes present) AND a probe text covering scripts, digits, whitespace runs
and contractions encodes to identical ids both ways; tests compare the two on a generated
corpus, and :meth:`Tokenizer.verify_fast` lets a caller (the packer) compare them on its own
data. Anything else (a foreign tokenizer, a mismatch, tiktoken missing, ``LMKIT_FAST_TOKENIZER=0``)
uses Hugging Face.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError
from lmkit.progress import is_terminal

PAD = "<pad>"
BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
MASK = "[MASK]"
SENTINELS = [f"<extra_id_{i}>" for i in range(100)]
SPECIAL_TOKENS: list[str] = [PAD, BOS, EOS, UNK, MASK, *SENTINELS]  # ids 0..104, in this order
N_BYTES = 256
MIN_VOCAB = len(SPECIAL_TOKENS) + N_BYTES + 1  # specials + every byte + at least one merge
# The largest vocabulary train_tokenizer accepts: the BPE trainer reserves memory for every token asked
# for before it reads any text (about 70 bytes each: a billion aborts the process after asking for
# 70 GB), and 2**20 is already 4x the largest vocabularies in use (Gemma's 262,144).
MAX_VOCAB = 1 << 20

# GPT-2's pre-tokenisation pattern, as used by the ByteLevel pre-tokenizer (for tiktoken).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_PROBE = (
    "The quick brown fox's 2 jumps over 12,345 lazy dogs. They'LL say: \"it's fine\" -- don't!\n"
    "  Indented\tline\twith tabs,\r\nWindows line ends and   runs of    spaces   \n\n\n"
    "Ünïcödé naïve café façade Straße ÆØÅ; Ελληνικά, русский текст, עברית, العربية, हिन्दी,"
    " 日本語のテキスト、中文文本。한국어 텍스트 😀🎉👍🏽 ∑∫√≤≥ ½ ¾ №\u00a0nbsp\u2009thin\u3000ideo\n"
    "code: def f(x): return x**2 + 0x1F; path/to/file.txt <s> </s> [MASK] <extra_id_7> \u200b\ufeff"
    " 3.14159 1e-5 42nd 1,000,000 $99.99 user@example.com https://example.org/a?b=c#d ....!!!???"
)


@lru_cache(maxsize=1)
def lone_surrogate(text: str) -> str | None:
    """None when ``text`` is Unicode text (encodes as UTF-8); else where it is not, as "a lone
    surrogate U+D800 at character 3": a ``\\ud800`` JSON escape or a non-UTF-8 byte of a command-line
    argument, which no tokenizer can encode and no UTF-8 file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate U+{ord(text[e.start]):04X} at character {e.start}"
    return None


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what ByteLevel stores)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in _byte_to_unicode().items()}


def _fast_disabled_by_env() -> bool:
    return os.environ.get("LMKIT_FAST_TOKENIZER", "1").strip().lower() in ("0", "false", "no", "off")


class Tokenizer:
    """lmkit's tokenizer: a Hugging Face ``tokenizers.Tokenizer`` plus special ids and fast encoding.

    ``strict`` (the default) requires lmkit's special tokens at ids 0..104. ``strict=False``
    accepts any Hugging Face tokenizer.json (e.g. to compare fertility against another
    tokenizer); special ids it lacks are then -1.
    """

    def __init__(self, hf: Any, strict: bool = True, source: str = "<memory>") -> None:
        self.hf = hf
        self.source = source
        self._json = hf.to_str()
        self.sha256: str = hashlib.sha256(self._json.encode("utf-8")).hexdigest()
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        ids = [hf.token_to_id(t) for t in SPECIAL_TOKENS]
        if strict:
            wrong = [(t, i, want) for want, (t, i) in enumerate(zip(SPECIAL_TOKENS, ids)) if i != want]
            if wrong:
                t, i, want = wrong[0]
                raise LmkitError(
                    f"{source}: not an lmkit tokenizer: special token {t!r} has id {i}, expected "
                    f"{want} (train one with `lmkit tokenizer train`)"
                )
        ids = [-1 if i is None else int(i) for i in ids]
        self.pad_id, self.bos_id, self.eos_id, self.unk_id, self.mask_id = ids[:5]
        self.sentinel_ids: list[int] = ids[5:]
        self.special_ids: frozenset[int] = frozenset(i for i, t in self._added_tokens() if t.special)
        # Literal special-token text in user input is encoded as ordinary text.
        hf.encode_special_tokens = True
        self._special_re = re.compile(
            "("
            + "|".join(
                re.escape(t)
                for t in sorted((t for t in SPECIAL_TOKENS if hf.token_to_id(t) is not None), key=len, reverse=True)
            )
            + ")"
        )
        self._byte_level = self._is_byte_level()
        self._tt: Any = None  # the tiktoken Encoding when the fast path is on
        self.fast_reason = self._build_fast()

    # ------------------------------------------------------------------ construction helpers

    def _added_tokens(self) -> list[tuple[int, Any]]:
        dec = self.hf.get_added_tokens_decoder()
        return sorted(dec.items())

    def _spec(self) -> dict[str, Any]:
        return json.loads(self._json)

    def _is_byte_level(self) -> bool:
        spec = self._spec()
        pre = spec.get("pre_tokenizer") or {}
        return (
            spec.get("model", {}).get("type") == "BPE"
            and pre.get("type") == "ByteLevel"
            and (spec.get("decoder") or {}).get("type") == "ByteLevel"
        )

    def _build_fast(self) -> str:
        """Set up the tiktoken path if provably equivalent; return why it is on or off."""
        if _fast_disabled_by_env():
            return "off: LMKIT_FAST_TOKENIZER=0"
        try:
            import tiktoken
        except ImportError:
            return "off: tiktoken not installed"
        spec = self._spec()
        model = spec["model"]
        pre = spec.get("pre_tokenizer") or {}
        if not self._byte_level or not pre.get("use_regex", True) or pre.get("add_prefix_space", False):
            return "off: not a byte-level BPE with GPT-2 pre-tokenisation"
        if spec.get("normalizer") is not None or model.get("dropout") or model.get("ignore_merges"):
            return "off: tokenizer has a normalizer, dropout or ignore_merges"
        u2b = _unicode_to_byte()
        ranks: dict[bytes, int] = {}
        special_ids = {i for i, t in self._added_tokens()}
        for tok, i in model["vocab"].items():
            if i in special_ids:
                continue
            try:
                b = bytes(u2b[c] for c in tok)
            except KeyError:
                return f"off: token {tok!r} is not byte-level"
            if b in ranks:
                return "off: two tokens with the same bytes"
            ranks[b] = int(i)
        if any(bytes([b]) not in ranks for b in range(256)):
            return "off: not every byte is a token"
        vocab = model["vocab"]
        last = -1
        for m in model["merges"]:
            a, b = m if isinstance(m, list) else m.split(" ", 1)
            rid = vocab.get(a + b)
            if rid is None or rid <= last:
                return "off: token ids do not follow merge order"
            last = rid
        specials = {t.content: int(i) for i, t in self._added_tokens()}
        try:
            enc = tiktoken.Encoding(
                f"lmkit-{self.sha256[:12]}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
            )
        except Exception as e:  # tiktoken rejects the vocabulary: stay on the reference path
            return f"off: tiktoken refused the vocabulary ({e})"
        self._tt = enc
        if not self.verify_fast([_PROBE, _PROBE.lower(), _PROBE.upper()]):
            self._tt = None
            return "off: tiktoken ids differ from Hugging Face on the probe text"
        return "on: tiktoken (ids checked identical to Hugging Face)"

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_str(cls, json_str: str, strict: bool = True, source: str = "<string>") -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(json_str)
        except Exception as e:  # the tokenizers library raises plain Exceptions for bad files
            raise LmkitError(f"{source}: not a valid tokenizer.json ({str(e).splitlines()[0][:200]})") from None
        return cls(hf, strict=strict, source=source)

    @classmethod
    def load(cls, path: str | Path, strict: bool = True) -> Tokenizer:
        """Load from a ``tokenizer.json``, a folder holding one, or a checkpoint folder."""
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / "tokenizer.json"
            if not p.is_file():
                raise LmkitError(f"{path}: folder has no tokenizer.json")
        elif not p.is_file():
            raise LmkitError(f"{path}: no such tokenizer file or folder")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LmkitError(f"{p}: cannot read tokenizer ({e})") from None
        return cls.from_str(text, strict=strict, source=str(p))

    def to_str(self) -> str:
        """The tokenizer.json content (compact); ``sha256`` is the hash of exactly this text."""
        return self._json

    def save(self, dir_or_file: str | Path) -> Path:
        """Write ``tokenizer.json`` (into a folder, or to a path ending in ``.json``) atomically."""
        p = Path(dir_or_file)
        if p.suffix.lower() != ".json":
            p = p / "tokenizer.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        tmp.write_text(self._json, encoding="utf-8")
        os.replace(tmp, p)
        return p

    # ------------------------------------------------------------------ encoding

    @property
    def fast(self) -> bool:
        """True when encoding goes through tiktoken (see the module docstring)."""
        return self._tt is not None

    def _encode_plain(self, text: str) -> list[int]:
        if self._tt is not None:
            return self._tt.encode_ordinary(text)
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``; no special tokens are added. With ``allow_special``, literal
        special-token strings in the text (``"<extra_id_0>"``) become their ids."""
        if not allow_special:
            return self._encode_plain(text)
        out: list[int] = []
        for i, piece in enumerate(self._special_re.split(text)):
            if i % 2:
                out.append(self.hf.token_to_id(piece))
            elif piece:
                out.extend(self._encode_plain(piece))
        return out

    def encode_batch(self, texts: list[str], num_threads: int | None = None) -> list[list[int]]:
        """Token ids of each text (no special tokens added), using all cores by default."""
        texts = list(texts)
        if self._tt is not None:
            return self._tt.encode_ordinary_batch(texts, num_threads=num_threads or (os.cpu_count() or 1))
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def encode_batch_reference(self, texts: list[str]) -> list[list[int]]:
        """Hugging Face's ids, bypassing the fast path (the reference the fast path must match)."""
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def verify_fast(self, texts: Sequence[str]) -> bool:
        """Do tiktoken and Hugging Face give identical ids on ``texts``? False if the fast path is off."""
        if self._tt is None:
            return False
        return self._tt.encode_ordinary_batch(list(texts), num_threads=1) == self.encode_batch_reference(list(texts))

    def disable_fast(self, reason: str) -> None:
        self._tt = None
        self.fast_reason = f"off: {reason}"

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped unless ``skip_special=False``."""
        ids = [int(i) for i in ids]
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise LmkitError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.hf.decode(ids, skip_special_tokens=skip_special)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one (non-special) token stands for; a special token's text as UTF-8."""
        tok = self.hf.id_to_token(int(token_id))
        if tok is None:
            raise LmkitError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        if int(token_id) in self.special_ids or not self._byte_level:
            return tok.encode("utf-8")
        u2b = _unicode_to_byte()
        return bytes(u2b[c] for c in tok)

    def token_str(self, token_id: int) -> str:
        """A readable form of one token: its text, with bytes that are only part of a UTF-8
        character shown as ``\\xNN`` escapes (instead of the replacement character)."""
        if not self._byte_level or int(token_id) in self.special_ids:
            if int(token_id) in self.special_ids:
                return self.hf.id_to_token(int(token_id))
            return self.hf.decode([int(token_id)], skip_special_tokens=False)
        return self.token_bytes(token_id).decode("utf-8", errors="backslashreplace")

    def special_ids_for_objectives(self) -> Any:
        """The ``objectives.SpecialIds`` of this tokenizer (the one way to build them from a tokenizer)."""
        from lmkit.objectives import SpecialIds  # lazy: objectives imports torch, tokenizer commands need not

        return SpecialIds(
            pad=self.pad_id,
            bos=self.bos_id,
            eos=self.eos_id,
            mask=self.mask_id,
            sentinels=tuple(self.sentinel_ids),
            vocab_size=self.vocab_size,
            n_special=len(self.special_ids),
        )

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}, fast={self.fast})"


# --------------------------------------------------------------------------- training


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, show_progress: bool = True
) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` with lmkit's special tokens at ids 0..104.

    The result can have fewer than ``vocab_size`` tokens when the text is too small to support
    that many merges; ``Tokenizer.vocab_size`` is the real size.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise LmkitError(
            f"vocab size {vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB} "
            f"({len(SPECIAL_TOKENS)} special tokens + {N_BYTES} bytes + 1 merge)"
        )
    if vocab_size > MAX_VOCAB:
        raise LmkitError(
            f"vocab size {vocab_size:,} is too large: lmkit trains {MIN_VOCAB:,} to {MAX_VOCAB:,} (2**20) "
            "tokens, because the trainer reserves memory for every token asked for (~70 bytes each) "
            "before reading any text"
        )
    if min_frequency < 1:
        raise LmkitError(f"min frequency must be at least 1, got {min_frequency}")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    # the trainer's own bars only on a terminal: into a pipe or a file they write bare blank lines
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=show_progress and is_terminal(sys.stderr),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    seen = {"chars": 0}

    def counted() -> Iterator[str]:
        for t in texts:
            if t:
                seen["chars"] += len(t)
                yield t

    hf.train_from_iterator(counted(), trainer=trainer)
    if seen["chars"] == 0:
        raise LmkitError("no text to train the tokenizer on (all inputs were empty)")
    return Tokenizer(hf, source="<trained>")


# --------------------------------------------------------------------------- measuring


def fertility(tok: Tokenizer, texts: Iterable[str], batch: int = 256) -> dict[str, Any]:
    """Tokens per (whitespace-separated) word, bytes and characters per token, over ``texts``."""
    docs = words = tokens = nbytes = chars = 0
    buf: list[str] = []

    def flush() -> None:
        nonlocal tokens
        tokens += sum(len(ids) for ids in tok.encode_batch(buf))
        buf.clear()

    for t in texts:
        docs += 1
        words += len(t.split())
        nbytes += len(t.encode("utf-8"))
        chars += len(t)
        buf.append(t)
        if len(buf) >= batch:
            flush()
    if buf:
        flush()
    return {
        "documents": docs,
        "words": words,
        "tokens": tokens,
        "bytes": nbytes,
        "chars": chars,
        "tokens_per_word": tokens / words if words else None,
        "bytes_per_token": nbytes / tokens if tokens else None,
        "chars_per_token": chars / tokens if tokens else None,
    }


def split_words(tok: Tokenizer, words: Iterable[str], in_text: bool = True) -> list[tuple[str, list[str]]]:
    """How each word or phrase is cut into tokens (readable token strings).

    With ``in_text`` (default) a word is split as it appears inside running text, i.e. after a
    space (``" mens"``), which is how a byte-level BPE sees most words; otherwise as typed.
    """
    out = []
    for w in words:
        ids = tok.encode(" " + w if in_text and not w.startswith(" ") else w)
        out.append((w, [tok.token_str(i) for i in ids]))
    return out


def tokenizer_stats(tok: Tokenizer, path: str, texts: list[str], words: list[str]) -> dict[str, Any]:
    """One tokenizer's figures for ``lmkit tokenizer stats``: ``path`` (as given), vocabulary size,
    sha256, :func:`fertility` on ``texts`` (when any) and the :func:`split_words` of ``words``."""
    d: dict[str, Any] = {"path": path, "vocab_size": tok.vocab_size, "sha256": tok.sha256}
    if texts:
        d["fertility"] = fertility(tok, texts)
    if words:
        d["words"] = [{"word": w, "tokens": pieces, "n_tokens": len(pieces)} for w, pieces in split_words(tok, words)]
    return d


TRAINED_BY = "lmkit tokenizer train"  # the command a sidecar stamp names


def check_tokenizer_out(out: str | Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """Where a trained tokenizer goes for ``--out OUT``: ``OUT/tokenizer.json``, or ``OUT`` itself
    when it ends in ``.json`` (as :meth:`Tokenizer.save` writes). Checked before any training
    (``lmkit.files.check_out_file``): an existing file there is replaced only with ``overwrite``,
    and only one :func:`save_stamped` wrote that nobody has changed since; never one of ``inputs``."""
    from lmkit.files import check_out_file, has_sidecar_stamp

    p = Path(out)
    if p.exists() and not p.is_dir() and p.suffix.lower() != ".json":
        raise LmkitError(f"--out {p}: exists and is not a folder")
    target = p if p.suffix.lower() == ".json" else p / "tokenizer.json"
    check_out_file(
        target,
        overwrite,
        inputs,
        ours=has_sidecar_stamp,
        kind=f"tokenizer (only one `{TRAINED_BY}` wrote and nobody changed since is replaced)",
    )
    return target


def save_stamped(tok: Tokenizer, target: str | Path) -> Path:
    """:meth:`Tokenizer.save` to ``target``, then the sidecar stamp by which ``--overwrite`` knows
    lmkit wrote it (``lmkit.files.write_sidecar_stamp``); returns the file written."""
    from lmkit.files import write_sidecar_stamp

    path = tok.save(target)
    write_sidecar_stamp(path, TRAINED_BY)
    return path


__all__ = [
    "lone_surrogate",
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "MASK",
    "SENTINELS",
    "SPECIAL_TOKENS",
    "MIN_VOCAB",
    "MAX_VOCAB",
    "Tokenizer",
    "train_tokenizer",
    "fertility",
    "split_words",
    "tokenizer_stats",
    "check_tokenizer_out",
    "save_stamped",
]
