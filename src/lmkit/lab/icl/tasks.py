"""The tasks of ``lmkit icl``: labelled examples and how they are written into a prompt.

What this module owns:

* :class:`Example` (one labelled item: multiple choice ``input``/``choices``/``label`` or
  free-form ``input``/``target``), :class:`PromptFormat` (instruction, example template, target
  delimiter, example separator) and :class:`Task` (the evaluated examples, the exemplar pool and
  the format);
* :func:`load_task`: a JSONL file of examples, with an optional YAML of the same name beside it
  for the format (and a ``train`` file for the exemplars), every problem one :class:`LmkitError`
  naming the file and line;
* the built-in tasks that need no download (:data:`BUILTIN`): the synthetic ``copy-pairs``
  (an induction task a tiny model can learn), ``add2`` (two-digit addition) and ``reverse`` (a
  word written backwards), and, from text the user gives, ``next-sentence`` (the true next
  sentence among 4) and ``last-word`` (LAMBADA-style). Each is a pure function of its seed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lmkit.errors import LmkitError
from lmkit.tokenizer import lone_surrogate

Kind = Literal["multiple_choice", "generate"]


@dataclass(frozen=True)
class Example:
    """One labelled example. Multiple choice: ``choices`` and ``label`` (``target`` is the right
    choice); free-form: ``target`` only. ``where`` says where it came from (file:line). A
    ``group`` (None: none) limits the query's exemplars to examples of the same group: the queries
    of one ``copy-pairs`` mapping share it."""

    input: str
    target: str
    choices: tuple[str, ...] | None = None
    label: int | None = None
    where: str = ""
    group: str | None = None


@dataclass(frozen=True)
class PromptFormat:
    """How examples become text: ``instruction``, then each exemplar as ``template`` (with
    ``{input}`` replaced) + ``target_delimiter`` + its answer, then the query's ``template``,
    all joined by ``separator``. ``calibration_context`` is GPT-3's content-free context for the
    calibrated score; free-form answers are cut at ``separator`` and at each of ``stop``."""

    instruction: str = ""
    template: str = "{input}\nAnswer:"
    target_delimiter: str = " "
    separator: str = "\n\n"
    calibration_context: str = "Answer:"
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 16


FORMAT_KEYS = (
    "instruction",
    "template",
    "target_delimiter",
    "separator",
    "calibration_context",
    "stop",
    "max_new_tokens",
)


@dataclass
class Task:
    """The evaluated ``examples``, the exemplar pool ``train`` (None: the rest of ``examples``,
    never the queried one) and the :class:`PromptFormat`."""

    name: str
    kind: Kind
    examples: list[Example]
    format: PromptFormat = field(default_factory=PromptFormat)
    train: list[Example] | None = None
    source: str = ""

    @property
    def pool(self) -> list[Example]:
        return self.train if self.train is not None else self.examples

    def chance(self, limit: int | None = None) -> float:
        """Accuracy of guessing: mean of 1/len(choices) for multiple choice, 0 for free-form."""
        exs = self.examples[:limit] if limit else self.examples
        if self.kind != "multiple_choice" or not exs:
            return 0.0
        return sum(1.0 / len(e.choices or ("",)) for e in exs) / len(exs)


# --------------------------------------------------------------------------- JSONL (+ YAML)


def _check_text(value: str, where: str, what: str) -> str:
    """``value`` when it is text; a lone surrogate is one :class:`LmkitError` naming ``where`` and ``what``."""
    bad = lone_surrogate(value)
    if bad:
        raise LmkitError(f"{where}: {what} holds {bad}, which is not text; fix the \\u escape or the bytes there")
    return value


def _example(rec: Any, where: str) -> tuple[Example, bool]:
    """One record -> (Example, is_train). Multiple choice when it has ``choices``."""
    if not isinstance(rec, dict):
        raise LmkitError(f'{where}: expected a JSON object with "input" and "choices"+"label" or "target"')
    text = rec.get("input")
    if not isinstance(text, str):
        raise LmkitError(f'{where}: "input" must be a string')
    _check_text(text, where, '"input"')
    is_train = rec.get("split") == "train"
    group = rec.get("group")
    if group is not None and not isinstance(group, str):
        raise LmkitError(f'{where}: "group" must be a string (examples that share one are each other\'s exemplars)')
    if group is not None:
        _check_text(group, where, '"group"')
    if "choices" in rec:
        choices = rec["choices"]
        if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)):
            raise LmkitError(f'{where}: "choices" must be a list of at least 2 non-empty strings')
        for c in choices:
            _check_text(c, where, '"choices"')
        label = rec.get("label")
        if isinstance(label, str) and label in choices:
            label = choices.index(label)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
            raise LmkitError(
                f'{where}: "label" must be the index (0..{len(choices) - 1}) of the right choice '
                f"or its text, got {label!r}"
            )
        return Example(text, choices[label], tuple(choices), label, where, group), is_train
    target = rec.get("target")
    if not isinstance(target, str) or not target.strip():
        raise LmkitError(
            f'{where}: needs "choices" and "label" (multiple choice) or a non-empty string "target" (free-form)'
        )
    _check_text(target, where, '"target"')
    return Example(text, target, None, None, where, group), is_train


def read_examples(path: str | Path) -> list[tuple[Example, bool]]:
    """The records of a JSONL file as (Example, is_train), checked line by line: binary data, bytes
    that are not UTF-8 and JSON that is not an example are each one error naming the file and line."""
    from lmkit.data.compressed import sniff

    p = Path(path)
    if not p.is_file():
        raise LmkitError(f"{p}: no such task file (give a .jsonl file or one of {', '.join(BUILTIN)})")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise LmkitError(f"{p}: cannot read it ({e.strerror or e})") from None
    kind = sniff(raw[:8])
    if kind is not None or b"\x00" in raw:
        raise LmkitError(f"{p}: looks binary ({f'{kind} data' if kind else 'NUL bytes'}), not a JSONL file of examples")
    out = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LmkitError(
                f"{p}:{n}: not valid UTF-8 (byte 0x{line[e.start]:02x} at byte {e.start + 1} of the line)"
            ) from None
        try:
            rec = json.loads(text.removeprefix("\ufeff") if n == 1 else text)
        except json.JSONDecodeError as e:
            raise LmkitError(f"{p}:{n}: not valid JSON ({e.msg})") from None
        except (RecursionError, ValueError):  # nested too deeply; a number of too many digits
            raise LmkitError(
                f"{p}:{n}: not readable JSON (nested too deeply, or a number of too many digits)"
            ) from None
        out.append(_example(rec, f"{p}:{n}"))
    if not out:
        raise LmkitError(f"{p}: holds no examples")
    return out


def _kind_of(items: Sequence[Example], source: str) -> Kind:
    kinds = {e.choices is not None for e in items}
    if len(kinds) > 1:
        first = next(e for e in items if (e.choices is not None) != (items[0].choices is not None))
        raise LmkitError(f"{first.where}: mixes multiple-choice and free-form examples in {source}; use one kind")
    return "multiple_choice" if items[0].choices is not None else "generate"


def _key_name(key: str, where: str) -> str:
    """A format key as the user wrote it: ``--target-delimiter`` among the flags, ``target_delimiter`` in YAML."""
    return f"--{key.replace('_', '-')}" if where == "flags" else key


def format_from_dict(raw: dict[str, Any], base: PromptFormat, where: str) -> PromptFormat:
    """``base`` with the format keys of ``raw`` (a YAML mapping or the flags) applied, checked."""
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in FORMAT_KEYS:
            continue
        if value is None:
            continue
        if key == "max_new_tokens":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LmkitError(f"{where}: max_new_tokens must be a positive integer, got {value!r}")
        elif key == "stop":
            value = (value,) if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
                raise LmkitError(f"{where}: stop must be a string or a list of non-empty strings")
            value = tuple(_check_text(s, where, _key_name(key, where)) for s in value)
        elif not isinstance(value, str):
            raise LmkitError(f"{where}: {key} must be a string, got {value!r}")
        else:
            _check_text(value, where, _key_name(key, where))
        changes[key] = value
    fmt = replace(base, **changes)
    if "{input}" not in fmt.template:
        raise LmkitError(f"{where}: template {fmt.template!r} must contain {{input}}")
    if not fmt.separator:
        raise LmkitError(f"{where}: separator must not be empty (it ends a free-form answer)")
    return fmt


def load_task(path: str | Path, overrides: dict[str, Any] | None = None) -> Task:
    """A task from a JSONL file; ``<name>.yaml`` beside it (if any) sets the format and may name a
    ``train`` JSONL (relative to the YAML) for the exemplars; ``overrides`` (the flags) win."""
    from lmkit.config_io import load_yaml

    p = Path(path)
    items = read_examples(p)
    fmt, train = PromptFormat(), None
    yml = next((y for y in (p.with_suffix(".yaml"), p.with_suffix(".yml")) if y.is_file()), None)
    if yml is not None:
        raw = load_yaml(yml)
        if not isinstance(raw, dict):
            raise LmkitError(f"{yml}: expected a mapping of format keys ({', '.join(FORMAT_KEYS)}, train)")
        unknown = sorted(set(raw) - set(FORMAT_KEYS) - {"train"})
        if unknown:
            raise LmkitError(f"{yml}: unknown key {unknown[0]!r} (known: {', '.join(FORMAT_KEYS)}, train)")
        fmt = format_from_dict(raw, fmt, str(yml))
        if raw.get("train"):
            train = [e for e, _ in read_examples(yml.parent / str(raw["train"]))]
    fmt = format_from_dict(overrides or {}, fmt, "flags")
    in_file_train = [e for e, t in items if t]
    evaluated = [e for e, t in items if not t]
    if in_file_train:
        train = (train or []) + in_file_train
    if not evaluated:
        raise LmkitError(f'{p}: every example is marked "split": "train"; nothing is left to evaluate')
    kind = _kind_of(evaluated + (train or []), str(p))
    return Task(p.stem, kind, evaluated, fmt, train, str(p))


# --------------------------------------------------------------------------- built-in tasks

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
KEYS = tuple(f"k{c}" for c in _LETTERS)  # letters only: a byte-level BPE makes each one token
VALUES = tuple(f"v{c}" for c in _LETTERS)
COPY_FORMAT = PromptFormat(template="{input}", target_delimiter=" ", separator=" ", calibration_context=KEYS[-1])
# "kc vd ka vb kc" -> "vd": a key, then its value, nothing between. The query's key is the last
# token and its value follows a matching key earlier on: the canonical induction pattern (Olsson
# et al. 2022) that two attention layers learn; an arrow or a separator between a key and its value
# makes the circuit one hop longer, and a tiny model then needs several times more steps. The
# calibration context is a lone key no query uses ("kz"): the model's prior over values.


def copy_pairs_line(
    rng: random.Random, min_pairs: int = 2, max_pairs: int = 4, repeats: int = 12, min_repeats: int = 8
) -> str:
    """One pre-training line of the ``copy-pairs`` world: ``min_pairs``..``max_pairs`` fresh
    ``key value`` pairs of a new random mapping, then ``min_repeats``..``repeats`` of them again
    (``kc vg ka vd kc vg ka vd kc vg``); a model that learns to finish it has learned to copy from
    its context (induction)."""
    n = rng.randint(min_pairs, max_pairs)
    keys = rng.sample(KEYS, n)
    pairs = [f"{k} {rng.choice(VALUES)}" for k in keys]
    return " ".join(pairs + [rng.choice(pairs) for _ in range(rng.randint(min(min_repeats, repeats), repeats))])


def copy_pairs_text(n_lines: int = 30000, seed: int = 0) -> str:
    """A pre-training corpus of ``n_lines`` :func:`copy_pairs_line` documents (blank-line
    separated): what ``lmkit icl --write-pretraining-text`` writes."""
    rng = random.Random(f"copy-pairs-text:{seed}")
    return "\n\n".join(copy_pairs_line(rng) for _ in range(n_lines)) + "\n"


def write_copy_pairs_text(out: str | Path, n_lines: int, seed: int, overwrite: bool = False) -> int:
    """``lmkit icl --write-pretraining-text OUT``: :func:`copy_pairs_text` written atomically to
    ``out``, with a sidecar stamp (a stamp line inside would be training text) by which
    ``overwrite`` replaces only a corpus lmkit wrote and nobody changed since. Returns its characters."""
    from lmkit.files import check_out_file, has_sidecar_stamp, write_sidecar_stamp, write_text_atomic

    if n_lines < 1:
        raise LmkitError(f"--lines must be at least 1, got {n_lines}")
    check_out_file(
        out,
        overwrite,
        what="--write-pretraining-text",
        ours=has_sidecar_stamp,
        kind="copy-pairs corpus (only one lmkit wrote and nobody changed since is replaced)",
    )
    text = copy_pairs_text(n_lines, seed)
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    write_sidecar_stamp(path, "lmkit icl --write-pretraining-text")
    return len(text)


def copy_pairs(n: int = 200, seed: int = 0, n_keys: int = 6, per_mapping: int = 10) -> Task:
    """``n`` queries over ``ceil(n / per_mapping)`` random mappings, each from ``n_keys`` keys to
    distinct values; 4 choices (the right value and 3 other values of its mapping). A query's
    exemplars are other queries of its own mapping (its ``group``), so a model that copies from its
    context gains once an exemplar holds the queried key, and a zero-shot guess cannot: the value
    is a fresh draw per mapping. The queries take the mappings in turn, so any ``--limit`` spans
    many of them and no one mapping's chance match dominates the zero-shot score."""
    rng = random.Random(f"copy-pairs:{seed}")
    n_maps = max(1, -(-n // per_mapping))
    mappings = []
    for _ in range(n_maps):
        keys = rng.sample(KEYS[:-1], n_keys)  # the last key is the calibration context
        mappings.append(dict(zip(keys, rng.sample(VALUES, n_keys))))
    out = []
    for i in range(n):
        g = i % n_maps
        mapping = mappings[g]
        k = rng.choice(list(mapping))
        others = rng.sample([v for o, v in mapping.items() if o != k], 3)
        choices = others + [mapping[k]]
        rng.shuffle(choices)
        out.append(Example(k, mapping[k], tuple(choices), choices.index(mapping[k]), f"copy-pairs#{i}", f"mapping{g}"))
    return Task("copy-pairs", "multiple_choice", out, COPY_FORMAT, None, "built-in")


def add2(n: int = 200, seed: int = 0) -> Task:
    """Two-digit addition, free-form: ``12 + 34 =`` -> ``46``."""
    rng = random.Random(f"add2:{seed}")
    out = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        out.append(Example(f"{a} + {b}", str(a + b), where=f"add2#{i}"))
    fmt = PromptFormat(template="{input} =", separator="\n", calibration_context="=", max_new_tokens=6)
    return Task("add2", "generate", out, fmt, None, "built-in")


WORDS = (
    "apple",
    "river",
    "stone",
    "garden",
    "window",
    "yellow",
    "silver",
    "market",
    "planet",
    "pencil",
    "bridge",
    "candle",
    "forest",
    "rabbit",
    "winter",
    "orange",
    "basket",
    "mirror",
    "castle",
    "button",
    "dragon",
    "flower",
    "ladder",
    "monkey",
    "pepper",
    "rocket",
    "sunset",
    "tunnel",
    "violin",
    "wallet",
)


def reverse(n: int = 200, seed: int = 0, words: Sequence[str] = WORDS) -> Task:
    """A word written backwards, free-form: ``reverse: stone ->`` -> ``enots``."""
    rng = random.Random(f"reverse:{seed}")
    out = [Example(w, w[::-1], where=f"reverse#{i}") for i, w in enumerate(rng.choice(list(words)) for _ in range(n))]
    fmt = PromptFormat(template="reverse: {input} ->", separator="\n", calibration_context="->", max_new_tokens=8)
    return Task("reverse", "generate", out, fmt, None, "built-in")


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]")


def sentences_of(text: str) -> list[str]:
    """The sentences of ``text`` (ending in . ! or ?), whitespace collapsed, at least 3 words."""
    out = []
    for m in _SENTENCE.finditer(text):
        s = " ".join(m.group(0).split())
        if len(s.split()) >= 3:
            out.append(s)
    return out


def next_sentence(texts: Sequence[str], n: int = 200, seed: int = 0) -> Task:
    """For a sentence of a text, its true next sentence among 4 (3 others from the same text)."""
    rng = random.Random(f"next-sentence:{seed}")
    items: list[tuple[int, list[str]]] = []
    for t in texts:
        sents = sentences_of(t)
        if len(sents) >= 5:
            items.extend((i, sents) for i in range(len(sents) - 1))
    if not items:
        raise LmkitError("--from-text: next-sentence needs texts with at least 5 sentences each")
    chosen = rng.sample(items, min(n, len(items)))
    out = []
    for j, (i, sents) in enumerate(chosen):
        true = sents[i + 1]
        others = rng.sample([s for k, s in enumerate(sents) if k not in (i, i + 1) and s != true], 3)
        choices = others + [true]
        rng.shuffle(choices)
        out.append(Example(sents[i], true, tuple(choices), choices.index(true), f"next-sentence#{j}"))
    fmt = PromptFormat(template="{input}")
    return Task("next-sentence", "multiple_choice", out, fmt, None, "--from-text")


def last_word(texts: Sequence[str], n: int = 200, seed: int = 0) -> Task:
    """LAMBADA-style: a sentence without its last word, free-form; the answer is that word."""
    rng = random.Random(f"last-word:{seed}")
    cands = []
    for t in texts:
        for s in sentences_of(t):
            words = s[:-1].split()
            if len(words) >= 5 and words[-1].isalpha():
                cands.append((" ".join(words[:-1]), words[-1]))
    if not cands:
        raise LmkitError("--from-text: last-word needs sentences of at least 5 words")
    chosen = rng.sample(cands, min(n, len(cands)))
    out = [Example(a, b, where=f"last-word#{i}") for i, (a, b) in enumerate(chosen)]
    fmt = PromptFormat(template="{input}", stop=(" ", ".", ",", "\n"), max_new_tokens=6)
    return Task("last-word", "generate", out, fmt, None, "--from-text")


BUILTIN = ("copy-pairs", "add2", "reverse", "next-sentence", "last-word")
FROM_TEXT = ("next-sentence", "last-word")


def builtin_task(name: str, n: int = 200, seed: int = 0, texts: Sequence[str] | None = None) -> Task:
    """A built-in task by name; ``texts`` for the ones made from the user's text."""
    if name in FROM_TEXT:
        if not texts:
            raise LmkitError(f"--task {name} is made from your text: give --from-text FILES")
        return next_sentence(texts, n, seed) if name == "next-sentence" else last_word(texts, n, seed)
    if name == "copy-pairs":
        return copy_pairs(n, seed)
    if name == "add2":
        return add2(n, seed)
    if name == "reverse":
        return reverse(n, seed)
    raise LmkitError(f"unknown built-in task {name!r} (known: {', '.join(BUILTIN)})")
