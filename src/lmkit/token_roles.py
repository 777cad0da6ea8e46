"""Which token plays which role for a model: :class:`TokenRoles`, where roles come from, and how they are kept.

What this module owns:

* :class:`TokenRoles`, a frozen record of token ids by role: ``bos``, ``eos`` (a tuple: generation
  stops on any of them, the first is the tokenizer's own end token), ``pad``, ``unk``, ``separator``
  (what the packer puts between documents: the model's own end-of-text), ``adds_bos`` (the
  tokenizer's post-processor puts ``bos`` before every text, as Llama-3's and TinyLlama's do), and
  the roles the other families use: ``mask``, ``cls``, ``sep``, ``sentinels`` (in ``<extra_id_i>``
  order) and ``decoder_start``. A role a tokenizer lacks is None (or an empty tuple).
* :func:`lmkit_roles`: the roles lmkit's own tokenizers imply by their fixed ids 0..104 (such a
  tokenizer has no roles file, so its hash is the hash of its tokenizer.json alone).
* :func:`read_hf_roles`: the roles of a Hugging Face folder, read from ``tokenizer_config.json``,
  ``special_tokens_map.json``, ``generation_config.json`` and ``config.json`` (in that order of
  precedence) and the tokenizer.json's post-processor (the token it puts first is BOS, and
  ``adds_bos``; BERT's and RoBERTa's own processors put their ``cls`` first), T5's sentinels (the
  files' list, else the vocabulary's ``<extra_id_N>`` in order) and the document separator (the
  end-of-text; BERT's ``[SEP]`` where there is no eos), with roles a user names on the command line
  (``lmkit import-hf --eos-token TOKEN``...) taking precedence over all of them.
* The roles file, ``tokenizer_roles.json`` beside ``tokenizer.json`` (:data:`ROLES_FILE`,
  :meth:`TokenRoles.to_json`, :meth:`TokenRoles.from_json`), and :func:`missing_role`, the one
  line a command gives when the tokenizer lacks a role it needs, naming the flag that supplies it.

Nothing here imports the tokenizer: callers pass a ``token_to_id`` lookup and the vocabulary size.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError

ROLES_FILE = "tokenizer_roles.json"
ROLES_FORMAT = "lmkit-token-roles/1"
SINGLE_ROLES = ("bos", "pad", "unk", "separator", "mask", "cls", "sep", "decoder_start")
LIST_ROLES = ("eos", "sentinels")
# the flag of `lmkit import-hf` that names each role a command may need (the separator follows eos)
ROLE_FLAGS = {"bos": "--bos-token", "eos": "--eos-token", "separator": "--eos-token", "pad": "--pad-token"}
# end-of-text tokens by name: preferred as the document separator among several eos tokens
END_OF_TEXT = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|end|>")


@dataclass(frozen=True)
class TokenRoles:
    """Token ids by role (None, or an empty tuple, where the tokenizer has none)."""

    bos: int | None = None
    eos: tuple[int, ...] = ()
    pad: int | None = None
    unk: int | None = None
    separator: int | None = None
    adds_bos: bool = False
    mask: int | None = None
    cls: int | None = None
    sep: int | None = None
    sentinels: tuple[int, ...] = ()
    decoder_start: int | None = None

    def to_json(self) -> str:
        """The roles file's text: canonical (sorted keys, no spaces), so that it hashes the same everywhere."""
        return json.dumps({"format": ROLES_FORMAT, **dataclasses.asdict(self)}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, vocab_size: int, source: str) -> TokenRoles:
        """Roles from a roles file's text; every id must be in the vocabulary (one line naming the key)."""
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise LmkitError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(raw, dict) or raw.get("format") != ROLES_FORMAT:
            raise LmkitError(f"{source}: not an lmkit roles file (format must be {ROLES_FORMAT!r})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known - {"format"})
        if unknown:
            raise LmkitError(f"{source}: unknown role {unknown[0]!r} (known: {', '.join(sorted(known))})")
        kw: dict[str, Any] = {}
        for key in SINGLE_ROLES:
            if raw.get(key) is not None:
                kw[key] = _checked_id(raw[key], vocab_size, f"{source}: {key}")
        for key in LIST_ROLES:
            v = raw.get(key) or []
            if not isinstance(v, list):
                raise LmkitError(f"{source}: {key} must be a list of token ids")
            kw[key] = tuple(_checked_id(i, vocab_size, f"{source}: {key}") for i in v)
        if not isinstance(raw.get("adds_bos", False), bool):
            raise LmkitError(f"{source}: adds_bos must be true or false")
        kw["adds_bos"] = raw.get("adds_bos", False)
        return cls(**kw)


def _checked_id(v: Any, vocab_size: int, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab_size:
        raise LmkitError(f"{where}: {v!r} is not a token id of this tokenizer (0..{vocab_size - 1})")
    return v


def lmkit_roles(token_to_id: Callable[[str], int | None]) -> TokenRoles | None:
    """The roles lmkit's own layout implies (``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3,
    ``[MASK]``=4, ``<extra_id_0..99>``=5..104), or None when a token is not at its place."""
    names = ["<pad>", "<s>", "</s>", "<unk>", "[MASK]", *(f"<extra_id_{i}>" for i in range(100))]
    if any(token_to_id(t) != i for i, t in enumerate(names)):
        return None
    # decoder_start: lmkit's encoder-decoders start decoding from <pad>, as T5 does
    return TokenRoles(
        bos=1, eos=(2,), pad=0, unk=3, separator=2, mask=4, sentinels=tuple(range(5, 105)), decoder_start=0
    )


def missing_role(role: str, needed_for: str, source: str) -> LmkitError:
    """The one line for a tokenizer that lacks ``role``, which ``needed_for`` needs."""
    flag = ROLE_FLAGS.get(role)
    how = f"; name it when importing: `lmkit import-hf MODEL --out CKPT {flag} TOKEN`" if flag else ""
    return LmkitError(f"{source}: the tokenizer has no {role} token, which {needed_for} needs{how}")


# --------------------------------------------------------------------------- a Hugging Face folder


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LmkitError(f"{path}: unreadable ({e})") from None
    if not isinstance(raw, dict):
        raise LmkitError(f"{path}: not a JSON object")
    return raw


def _token_text(v: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken object."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) and v else None


def _post_processor_prefix(spec: Mapping[str, Any]) -> str | None:
    """The special token a tokenizer.json's post-processor puts before a single text, if any: a
    template's first special token, or the ``cls`` of BERT's and RoBERTa's own processors."""
    pp = spec.get("post_processor") or {}
    procs = pp.get("processors", []) if pp.get("type") == "Sequence" else [pp]
    for p in procs:
        if isinstance(p, dict) and p.get("type") == "TemplateProcessing":
            single = p.get("single") or []
            first = single[0] if single else {}
            if isinstance(first, dict) and "SpecialToken" in first:
                return str(first["SpecialToken"].get("id"))
        if isinstance(p, dict) and p.get("type") in ("BertProcessing", "RobertaProcessing"):
            cls = p.get("cls") or []
            return str(cls[0]) if cls else None
    return None


def _sentinel_order(texts: list[str]) -> dict[str, int]:
    """``<extra_id_N>`` token texts by their N (other texts left out)."""
    out = {}
    for t in texts:
        n = t[len("<extra_id_") : -1]
        if t.startswith("<extra_id_") and t.endswith(">") and n.isdigit():
            out[t] = int(n)
    return out


def read_hf_roles(
    folder: Path,
    spec: Mapping[str, Any],
    token_to_id: Callable[[str], int | None],
    vocab_size: int,
    given: Mapping[str, str | None] | None = None,
    defaults: TokenRoles | None = None,
) -> TokenRoles:
    """The roles of the tokenizer in Hugging Face ``folder`` (``spec``: its tokenizer.json, parsed).

    ``given`` maps a role (bos, eos, pad) to a token text named on the command line; it replaces what
    the files say. A role neither names takes its value in ``defaults`` (lmkit's implied roles for a
    tokenizer of lmkit's layout). A token named by a file or a flag must be in the vocabulary; an id
    a file names must be below ``vocab_size`` (one line naming the file and key)."""
    dflt = defaults or TokenRoles()
    tc = _read_json(folder / "tokenizer_config.json")
    stm = _read_json(folder / "special_tokens_map.json")
    gen = _read_json(folder / "generation_config.json")
    cfg = _read_json(folder / "config.json")

    def by_text(text: str, where: str) -> int:
        i = token_to_id(text)
        if i is None:
            raise LmkitError(f"{where}: token {text!r} is not in the tokenizer's vocabulary")
        return int(i)

    def ids_of(d: dict[str, Any], key: str, name: str) -> list[int]:
        v = d.get(key)
        vs = v if isinstance(v, list) else [] if v is None else [v]
        return [_checked_id(i, vocab_size, f"{folder / name}: {key}") for i in vs]

    def named_id(role: str) -> int | None:
        """The id the flag or the files name for ``role`` (None when none does)."""
        if given and given.get(role):
            return by_text(str(given[role]), f"--{role}-token")
        for d, name in ((tc, "tokenizer_config.json"), (stm, "special_tokens_map.json")):
            text = _token_text(d.get(f"{role}_token"))
            if text is not None:
                return by_text(text, f"{folder / name}: {role}_token")
        for d, name in ((gen, "generation_config.json"), (cfg, "config.json")):
            found = ids_of(d, f"{role}_token_id", name)
            if found:
                return found[0]
        return None

    def single(role: str) -> int | None:
        found = named_id(role)
        return found if found is not None else getattr(dflt, role)  # type: ignore[no-any-return]

    first = named_id("eos")
    eos = [first] if first is not None else []
    if not (given and given.get("eos")):
        # generation stops on generation_config's list (the model's own); config.json's fills a gap
        more = ids_of(gen, "eos_token_id", "generation_config.json") or ids_of(cfg, "eos_token_id", "config.json")
        eos += [i for i in more if i not in eos]
    named = [i for i in eos if _text_of(i, token_to_id, END_OF_TEXT) is not None]
    sep = single("sep")
    # between documents: the end-of-text; BERT has no eos, and its [SEP] ends every text instead
    separator = named[0] if named else eos[0] if eos else sep if sep is not None else dflt.separator
    # BOS is put first exactly when the post-processor does it (transformers 5 follows tokenizer.json's
    # post-processor, whatever tokenizer_config.json's add_bos_token says); its token is the BOS
    prefix = _post_processor_prefix(spec)
    prefix_id = token_to_id(prefix) if prefix is not None else None
    bos = prefix_id if prefix_id is not None and not (given and given.get("bos")) else single("bos")
    adds_bos = prefix_id is not None and prefix_id == bos
    # T5's sentinels: the files' list (transformers 4 calls it additional_special_tokens, 5
    # extra_special_tokens), else the vocabulary's <extra_id_0>, <extra_id_1>, ... in that order
    key, extra = next(
        ((k, d[k]) for d in (tc, stm) for k in ("additional_special_tokens", "extra_special_tokens") if d.get(k)),
        ("additional_special_tokens", []),
    )
    order = _sentinel_order([t for t in (_token_text(x) for x in extra) if t is not None])
    where = f"{folder / 'tokenizer_config.json'}: {key}"
    listed = tuple(by_text(t, where) for t in sorted(order, key=order.__getitem__))
    in_vocab: list[int] = []
    while (i := token_to_id(f"<extra_id_{len(in_vocab)}>")) is not None:
        in_vocab.append(int(i))
    sentinels = listed or tuple(in_vocab) or dflt.sentinels
    start = ids_of(gen, "decoder_start_token_id", "generation_config.json") or ids_of(
        cfg, "decoder_start_token_id", "config.json"
    )
    return TokenRoles(
        bos=bos,
        eos=tuple(eos) or dflt.eos,
        pad=single("pad"),
        unk=single("unk"),
        separator=separator,
        adds_bos=adds_bos,
        mask=single("mask"),
        cls=single("cls"),
        sep=sep,
        sentinels=sentinels,
        decoder_start=start[0] if start else dflt.decoder_start,
    )


def _text_of(i: int, token_to_id: Callable[[str], int | None], names: tuple[str, ...]) -> str | None:
    """The name among ``names`` whose token id is ``i``, if any."""
    return next((n for n in names if token_to_id(n) == i), None)


__all__ = ["ROLES_FILE", "ROLE_FLAGS", "TokenRoles", "lmkit_roles", "missing_role", "read_hf_roles"]
