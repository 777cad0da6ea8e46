"""The tokenizer: train, save, load and measure a BPE (Hugging Face ``tokenizers``), lmkit's own or a model's.

What this module owns:

* :func:`train_tokenizer` trains a byte-level BPE whose first ids are the special tokens of all three
  families, in a fixed order: ``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3, ``[MASK]``=4,
  ``<extra_id_0..99>``=5..104; then the 256 bytes (so ``decode(encode(s)) == s`` for any string),
  then the merges; :data:`MIN_VOCAB` to :data:`MAX_VOCAB` tokens (the trainer reserves memory for
  each token asked for before it reads any text).
* :class:`Tokenizer`, lmkit's wrapper of any ``tokenizer.json``, used as it is: encode/decode, the
  ids of each role (:class:`lmkit.token_roles.TokenRoles`: lmkit's own tokenizers imply them by
  ids 0..104; a model's imported tokenizer keeps them in ``tokenizer_roles.json`` beside its
  ``tokenizer.json``), the bytes each token stands for, a readable form of one token, save/load
  and a ``sha256`` that identifies it: the hash of tokenizer.json, and of the roles file too when
  there is one (so lmkit's own tokenizers keep the hash their checkpoints and shards record).
  :func:`import_tokenizer` reads a Hugging Face folder's tokenizer and its roles for import.
* Where ``lmkit tokenizer train`` writes (:func:`check_tokenizer_out`, before any training) and
  how it marks the file as lmkit's (:func:`save_stamped`): a sidecar stamp beside
  ``tokenizer.json``, since the tokenizers library refuses any key it does not know inside it.

Text never turns into special tokens by accident: ``encode`` treats a literal ``"</s>"`` as ordinary
characters; ``encode(text, allow_special=True)`` reads the tokenizer's special tokens, for prompts
that mean them (``"The <extra_id_0> sat"``). Nor does ``encode`` add the post-processor's tokens:
:meth:`Tokenizer.prompt_ids` puts BOS first where the model's tokenizer adds it (``adds_bos``), and
:meth:`Tokenizer.wrap` puts them around one text as ``AutoTokenizer(text)`` does (BERT's
``[CLS] .. [SEP]``, RoBERTa's ``<s> .. </s>``, T5's ``.. </s>``; lmkit's own: EOS on both sides).

Bytes: a token stands for the bytes :mod:`lmkit.bpe_bytes` reads from its text (GPT-2's byte
alphabet; SentencePiece's ``▁`` space and ``<0xNN>`` bytes; WordPiece's ``##``). SentencePiece puts
a ``▁`` before the start of a text that is no byte of it, and BERT's normalizer lowercases, strips
accents and drops whitespace: :meth:`Tokenizer.encode_with_bytes` gives each token the bytes of the
text it covers (by offsets where the tokens' own bytes differ), so that they join to the text's
UTF-8 bytes exactly (bits per byte count the text's own bytes).

Fast encoding: a byte-level BPE of GPT-2's shape encodes through ``tiktoken``, several times faster
than Hugging Face's ``encode_batch`` (the slow part of packing), only where it is provably the same
tokenizer and checked identical on a probe text (:mod:`lmkit.bpe_bytes` has the argument);
:meth:`Tokenizer.verify_fast` lets a caller (the packer) compare the two on its own data.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from lmkit.bpe_bytes import build_fast, ends_sentence, piece_bytes, prepends_space, same_ids, token_kind
from lmkit.errors import LmkitError
from lmkit.progress import is_terminal
from lmkit.token_roles import TokenRoles, lmkit_roles, missing_role, read_hf_roles

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


def _id(i: int | None) -> int:
    return -1 if i is None else int(i)


def roles_path(tokenizer_file: Path) -> Path:
    """Where the roles of ``tokenizer_file`` are kept: ``tokenizer.json`` -> ``tokenizer_roles.json``
    (:data:`lmkit.token_roles.ROLES_FILE`) beside it; ``x.json`` -> ``x_roles.json``."""
    return tokenizer_file.with_name(f"{tokenizer_file.stem}_roles.json")


class Tokenizer:
    """lmkit's tokenizer: a Hugging Face ``tokenizers.Tokenizer``, the ids of its roles, and fast encoding.

    ``roles`` says which token plays which role. Without it, lmkit's layout implies them (special
    tokens at ids 0..104): ``strict`` (the default) requires that layout, ``strict=False`` accepts any
    tokenizer.json (e.g. to compare fertility against another tokenizer), whose roles are then empty.
    Role ids are also attributes (``bos_id``, ``eos_id``: the first of ``eos_ids``, ``pad_id``,
    ``separator_id``...; -1 where the tokenizer has none).
    """

    def __init__(self, hf: Any, strict: bool = True, source: str = "<memory>", roles: TokenRoles | None = None) -> None:
        self.hf = hf
        self.source = source
        self._json = hf.to_str()
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        implied = lmkit_roles(hf.token_to_id)
        if roles is None and implied is None and strict:
            ids = [hf.token_to_id(t) for t in SPECIAL_TOKENS]
            t, i, want = next((t, i, want) for want, (t, i) in enumerate(zip(SPECIAL_TOKENS, ids)) if i != want)
            raise LmkitError(
                f"{source}: not an lmkit tokenizer: special token {t!r} has id {i}, expected "
                f"{want} (train one with `lmkit tokenizer train`)"
            )
        self.roles: TokenRoles = roles if roles is not None else implied or TokenRoles()
        # lmkit's own roles are implied by the ids: no roles file, and the hash of tokenizer.json alone
        self.roles_in_file = roles is not None and roles != implied
        hashed = self._json + ("\n" + self.roles.to_json() if self.roles_in_file else "")
        self.sha256: str = hashlib.sha256(hashed.encode("utf-8")).hexdigest()
        r = self.roles
        self.pad_id, self.bos_id, self.unk_id, self.mask_id = (_id(x) for x in (r.pad, r.bos, r.unk, r.mask))
        self.eos_ids: tuple[int, ...] = r.eos  # generation stops on any of them
        self.eos_id = r.eos[0] if r.eos else -1
        self.separator_id = _id(r.separator)  # between packed documents: the model's own end-of-text
        self.adds_bos = r.adds_bos
        self.sentinel_ids: list[int] = list(r.sentinels)  # <extra_id_0>, <extra_id_1>, ... (T5: counting down)
        self.cls_id, self.sep_id, start = (_id(x) for x in (r.cls, r.sep, r.decoder_start))
        self.decoder_start_id = start if start >= 0 else self.pad_id  # an encoder-decoder's first target id (T5: pad)
        added = sorted(hf.get_added_tokens_decoder().items())
        self.special_ids: frozenset[int] = frozenset(i for i, t in added if t.special)
        # Literal special-token text in user input is encoded as ordinary text.
        hf.encode_special_tokens = True
        names = sorted((t.content for _, t in added if t.special), key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in names) + ")" if names else "(?!)")
        self._with_specials: Any = None  # a second Hugging Face tokenizer that reads special tokens
        spec = json.loads(self._json)
        self._kind = token_kind(spec)
        self._byte_fallback = bool(spec.get("model", {}).get("byte_fallback"))
        self.space_before_text = prepends_space(spec)  # SentencePiece's "▁" before a text's start
        specials = {t.content: int(i) for i, t in added}
        self._continuation = str(spec.get("model", {}).get("continuing_subword_prefix") or "##")
        self._tt, self.fast_reason = build_fast(
            spec, specials, f"lmkit-{self.sha256[:12]}", self.encode_batch_reference
        )
        # the post-processor's tokens around one text (BERT: [CLS] .. [SEP]; RoBERTa: <s> .. </s>; T5: .. </s>)
        bare, full = (hf.encode("a", add_special_tokens=a).ids for a in (False, True))
        at = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), 0)
        self.template = (full[:at], full[at + len(bare) :]) if bare else ([], [])
        if self.template == ([], []) and implied is not None and self.roles == implied:
            self.template = ([self.eos_id], [self.eos_id])  # lmkit's own: between EOS, as a packed document

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_str(
        cls, json_str: str, strict: bool = True, source: str = "<string>", roles_json: str | None = None
    ) -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(json_str)
        except Exception as e:  # the tokenizers library raises plain Exceptions for bad files
            raise LmkitError(f"{source}: not a valid tokenizer.json ({str(e).splitlines()[0][:200]})") from None
        roles = None
        if roles_json is not None:
            roles_src = str(roles_path(Path(source)))
            roles = TokenRoles.from_json(roles_json, hf.get_vocab_size(with_added_tokens=True), roles_src)
        return cls(hf, strict=strict, source=source, roles=roles)

    @classmethod
    def load(cls, path: str | Path, strict: bool = True) -> Tokenizer:
        """Load from a ``tokenizer.json``, a folder holding one, or a checkpoint folder, with the
        ``tokenizer_roles.json`` beside it when there is one."""
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / "tokenizer.json"
            if not p.is_file():
                raise LmkitError(f"{path}: folder has no tokenizer.json")
        elif not p.is_file():
            raise LmkitError(f"{path}: no such tokenizer file or folder")
        beside = roles_path(p)
        try:
            text = p.read_text(encoding="utf-8")
            roles = beside.read_text(encoding="utf-8") if beside.is_file() else None
        except (OSError, UnicodeDecodeError) as e:
            raise LmkitError(f"{p}: cannot read tokenizer ({e})") from None
        return cls.from_str(text, strict=strict, source=str(p), roles_json=roles)

    def to_str(self) -> str:
        """The tokenizer.json content (compact); for lmkit's own, ``sha256`` is the hash of exactly this text."""
        return self._json

    def save(self, dir_or_file: str | Path, with_roles: bool = True) -> Path:
        """Write ``tokenizer.json`` (into a folder, or to a path ending in ``.json``) atomically, and
        the roles file beside it when the roles are not lmkit's implied ones (unless ``with_roles``
        is False: a Hugging Face export says them in its own files)."""
        p = Path(dir_or_file)
        if p.suffix.lower() != ".json":
            p = p / "tokenizer.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        files = [(p, self._json)]
        if self.roles_in_file and with_roles:
            files.append((roles_path(p), self.roles.to_json() + "\n"))
        elif with_roles:  # roles implied by the ids: a roles file left from another tokenizer would mislead
            roles_path(p).unlink(missing_ok=True)
        for target, text in files:
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
        return p

    # ------------------------------------------------------------------ roles

    def require(self, role: str, needed_for: str) -> int:
        """The id of ``role`` (bos, eos, pad, separator...), or the one line saying which flag supplies it."""
        value = getattr(self.roles, role)
        i = value[0] if isinstance(value, tuple) and value else value
        if i is None or i == ():
            raise missing_role(role, needed_for, self.source)
        return int(i)

    def prompt_ids(self, text: str, allow_special: bool = False) -> list[int]:
        """The ids a decoder reads for a prompt: BOS first where the model's tokenizer adds it
        (``adds_bos``); an empty prompt is BOS alone (or the document separator, for a model without
        BOS: what it saw before every document)."""
        ids = self.encode(text, allow_special=allow_special) if text else []
        if self.adds_bos:
            ids = [self.bos_id, *ids]
        if not ids:
            if self.bos_id < 0 and self.separator_id < 0:
                raise missing_role("bos", "an empty prompt", self.source)
            ids = [self.bos_id if self.bos_id >= 0 else self.separator_id]
        return ids

    def wrap(self, ids: Sequence[int]) -> list[int]:
        """``ids`` of one text inside the post-processor's tokens, as ``AutoTokenizer(text)`` gives them
        (BERT: ``[CLS] .. [SEP]``); lmkit's own tokenizers have none: between EOS, as a packed document."""
        return [*self.template[0], *ids, *self.template[1]]

    def encoder_ids(self, text: str) -> list[int]:
        """An encoder-decoder's input for ``text`` as transformers reads it (BART: ``<s> .. </s>``; else text + EOS)."""
        ids = self.encode(text, allow_special=True) if text else []
        own = not self.template[0] or self.template[0] == [self.eos_id]  # T5's ``.. </s>``; lmkit's own
        return [*ids, *([self.eos_id] if self.eos_id >= 0 else [])] if own else self.wrap(ids)

    @property
    def mask_text(self) -> str | None:
        """The text of the model's own mask token (``[MASK]``, ``<mask>``), None without one."""
        return self.hf.id_to_token(self.mask_id) if self.mask_id >= 0 else None

    # ------------------------------------------------------------------ encoding

    @property
    def fast(self) -> bool:
        """True when encoding goes through tiktoken (see the module docstring)."""
        return self._tt is not None

    def _encode_plain(self, text: str) -> list[int]:
        if self._tt is not None:
            return list(self._tt.encode_ordinary(text))
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``; no special tokens are added. With ``allow_special``, literal
        special-token strings in the text (``"<extra_id_0>"``, ``"<|endoftext|>"``) become their ids."""
        if not allow_special:
            return self._encode_plain(text)
        if self._tt is None:  # the tokenizer's own split on its special tokens (SentencePiece needs it)
            if self._with_specials is None:
                from tokenizers import Tokenizer as HFTokenizer

                self._with_specials = HFTokenizer.from_str(self._json)
            return list(self._with_specials.encode(text, add_special_tokens=False).ids)
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
        return self._tt is not None and same_ids(self._tt, self.encode_batch_reference, texts)

    def disable_fast(self, reason: str) -> None:
        self._tt = None
        self.fast_reason = f"off: {reason}"

    def encode_with_bytes(self, text: str) -> tuple[list[int], list[bytes]]:
        """``encode(text)`` and the bytes of ``text`` each token covers: joined, exactly the text's
        UTF-8 bytes. A token's own bytes (:meth:`token_bytes`), except that a space SentencePiece put
        before the text is no byte of it, and where a normalizer rewrote the text (NFC) each token
        covers the characters its offsets name."""
        ids = self.encode(text)
        pieces = [self.token_bytes(i) for i in ids]
        want, got = text.encode("utf-8"), b"".join(pieces)
        if got == want:
            return ids, pieces
        if self.space_before_text and pieces and pieces[0][:1] == b" " and got[1:] == want:
            return ids, [pieces[0][1:], *pieces[1:]]
        done, out = 0, []
        for _, end in self.hf.encode(text, add_special_tokens=False).offsets:
            out.append(text[done:end].encode("utf-8") if end > done else b"")
            done = max(done, end)
        if out:
            out[-1] += text[done:].encode("utf-8")
        return ids, out

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped unless ``skip_special=False``."""
        ids = [int(i) for i in ids]
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise LmkitError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.hf.decode(ids, skip_special_tokens=skip_special)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one (non-special) token stands for (``▁`` a space, ``<0xNN>`` one byte); a
        special token's text as UTF-8."""
        tok = self.hf.id_to_token(int(token_id))
        if tok is None:
            raise LmkitError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        if int(token_id) in self.special_ids:
            return tok.encode("utf-8")
        return piece_bytes(tok, self._kind, self._byte_fallback, self._continuation)

    def token_str(self, token_id: int) -> str:
        """A readable form of one token: its text, with bytes that are only part of a UTF-8
        character shown as ``\\xNN`` escapes (instead of the replacement character)."""
        if int(token_id) in self.special_ids:
            return self.hf.id_to_token(int(token_id))
        if self._kind == "plain":
            return self.hf.decode([int(token_id)], skip_special_tokens=False)
        return self.token_bytes(token_id).decode("utf-8", errors="backslashreplace")

    def special_ids_for_objectives(self) -> Any:
        """The ``objectives.SpecialIds`` of this tokenizer (the one way to build them from a tokenizer)."""
        from lmkit.objectives import SpecialIds  # lazy: objectives imports torch, tokenizer commands need not

        r = self.roles
        roles = {i for i in (r.bos, r.pad, r.unk, r.separator, r.mask, r.cls, r.sep, r.decoder_start) if i is not None}
        special = sorted(self.special_ids | roles | set(r.eos) | set(r.sentinels))
        contiguous = special == list(range(len(special)))  # lmkit's own layout: ids 0..104
        stops = tuple(i for i in range(self.vocab_size) if i not in special and ends_sentence(self.token_bytes(i)))
        kw: dict[str, Any] = dict(pad=self.pad_id, bos=self.bos_id, eos=self.eos_id, mask=self.mask_id)
        kw.update(sentinels=r.sentinels, vocab_size=self.vocab_size, decoder_start=self.decoder_start_id)
        n, listed = (len(special), ()) if contiguous else (0, tuple(special))
        return SpecialIds(**kw, n_special=n, special=listed, full_stops=stops)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}, fast={self.fast})"


def import_tokenizer(
    folder: Path, tokenizer: str | Path | None, rows: int, given: Mapping[str, str | None] | None = None
) -> Tokenizer:
    """The tokenizer of Hugging Face ``folder`` (or the file ``tokenizer``) with its roles, for a model
    of ``rows`` embedding rows: as it is, with roles read by :func:`lmkit.token_roles.read_hf_roles`
    (``given``: roles named on the command line). It may have fewer tokens than rows (Qwen2.5:
    151,665 for 151,936), never more."""
    path = Path(tokenizer) if tokenizer else folder / "tokenizer.json"
    if not path.is_file():
        raise LmkitError(
            f"{path}: no such tokenizer file; lmkit needs the model's tokenizer to train or evaluate "
            "(pass --tokenizer FILE, or --no-tokenizer to import the weights alone)"
        )
    plain = Tokenizer.load(path, strict=False)
    if not plain.roles_in_file:
        spec = json.loads(plain.to_str())
        implied = lmkit_roles(plain.hf.token_to_id)
        roles = read_hf_roles(path.parent, spec, plain.hf.token_to_id, plain.vocab_size, given, implied)
        plain = Tokenizer(plain.hf, strict=False, source=str(path), roles=roles)
    if plain.vocab_size > rows:
        raise LmkitError(
            f"{path}: tokenizer has {plain.vocab_size:,} tokens but the model's embedding has {rows:,} rows; "
            "it may have fewer tokens than rows, never more (or pass --no-tokenizer)"
        )
    return plain


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
    "roles_path",
    "train_tokenizer",
    "check_tokenizer_out",
    "save_stamped",
]
