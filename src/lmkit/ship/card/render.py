"""Model cards: the hub README of a checkpoint, written from what the checkpoint records.

``lmkit card CKPT`` (:func:`render_card`) writes Markdown with YAML front matter in the format
model hubs read (license, language, library_name, pipeline_tag, tags, datasets, metrics and a
``model-index`` with the held-out results), then these sections:

* what the model is, its architecture, and which tasks its family suits;
* how it was trained: objective, data sources and mix, curation survival, tokens, steps, compute
  in FLOPs and petaFLOP/s-days, hardware, wall time, precision, hyper-parameters;
* evaluation: held-out loss, perplexity, bits per byte, and quantization deltas when recorded;
* limitations and risks: size, data domain, training amount, no alignment or safety tuning;
* how to load it with lmkit and with ``transformers``;
* then the user's own sections (``--add-section FILE``), verbatim.

Every figure comes from the checkpoint (``meta.json``, ``config.json``, ``resolved.yaml``,
``tokenizer.json``); a figure the checkpoint does not hold is reported as "not recorded", never
guessed. The same card is the ``README.md`` of an export and of a hub entry.

Every card carries a stamp (``lmkit.files.stamp``), a YAML comment just after the opening ``---``
with the SHA-256 of the rest of the card. ``card --overwrite`` replaces only a file with a stamp
that matches (:func:`is_card_file`): a card lmkit wrote and nobody has edited since, never the
user's own Markdown, notes or README, nor a card they edited.

This module reads the facts (:func:`card_facts`), writes the front matter and puts the sections in
order (:func:`render_card`); the sections themselves are ``lmkit.ship.card.describe`` (the model,
its uses and limits, how to load it) and ``lmkit.ship.card.training`` (training and evaluation).
``lmkit card``'s flags and printing live in ``lmkit.cli.ship``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lmkit.errors import LmkitError
from lmkit.families import PIPELINE_TAG
from lmkit.files import is_stamped, stamp
from lmkit.models.hf import hf_architecture
from lmkit.ship.card.describe import default_name, limitations_section, model_section, usage_section
from lmkit.ship.card.figures import NOT_RECORDED, is_number, source_tokens
from lmkit.ship.card.training import evaluation_section, training_section

# --------------------------------------------------------------------------- reading the checkpoint


def _check_weights_readable(path: Path) -> None:
    """Refuse to describe weights that cannot be loaded: a missing, truncated or foreign
    model.safetensors (only its header is read: the check costs no more for a large model)."""
    from safetensors import safe_open

    from lmkit.models.checkpoint import check_weights
    from lmkit.models.sharded_checkpoint import is_sharded

    if is_sharded(path):  # a multi-process run's: its shards' index read and the shapes checked, no tensor
        return check_weights(path)
    f = path / "model.safetensors"
    if not f.is_file():
        raise LmkitError(f"{path}: model.safetensors is missing; no card is written for weights that are not there")
    try:
        with safe_open(str(f), framework="pt"):
            pass
    except Exception as e:  # safetensors' own error type for a damaged header or a short file
        raise LmkitError(
            f"{f}: weights unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "no card is written for them"
        ) from None


def _tokenizer_kind(spec_json: str) -> str:
    """How a tokenizer.json splits text, as the card names it (byte-level BPE, SentencePiece, WordPiece)."""
    import json

    from lmkit.bpe_bytes import token_kind

    spec = json.loads(spec_json)
    model = spec.get("model") or {}
    kind = token_kind(spec)
    if kind == "byte_level":
        return "byte-level BPE"
    if kind == "wordpiece":
        return "WordPiece"
    if kind == "metaspace":
        what = "SentencePiece-style " + ("Unigram" if model.get("type") == "Unigram" else "BPE")
        return what + (" with byte fallback" if model.get("byte_fallback") else "")
    return str(model.get("type") or "unknown")


def card_facts(ckpt: str | Path) -> dict[str, Any]:
    """Everything the card says, read from the checkpoint: config, meta, run config, tokenizer."""
    from lmkit.config import model_config_from_dict
    from lmkit.models.checkpoint import load_meta, read_config, resolve_checkpoint

    path = resolve_checkpoint(ckpt)
    raw = read_config(path)
    cfg = model_config_from_dict(raw["model"])
    _check_weights_readable(path)
    try:
        meta = load_meta(path)
    except (OSError, ValueError) as e:
        raise LmkitError(f"{path / 'meta.json'}: unreadable ({e})") from None
    run: dict[str, Any] = {}
    if (path / "resolved.yaml").is_file():
        try:
            run = yaml.safe_load((path / "resolved.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            run = {}
    tok: dict[str, Any] = {}
    if (path / "tokenizer.json").is_file():
        from lmkit.tokenizer import Tokenizer

        t = Tokenizer.load(path / "tokenizer.json", strict=False)
        tok = {
            "vocab_size": t.vocab_size,
            "sha256": t.sha256,
            "bos": t.bos_id,
            "eos": t.eos_id,
            "pad": t.pad_id,
            "mask": t.mask_id,
            # the model's own roles (lmkit.token_roles): the tokens by name, as a reader knows them
            "eos_tokens": [t.token_str(i) for i in t.eos_ids],
            "separator_token": t.token_str(t.separator_id) if t.separator_id >= 0 else None,
            "bos_token": t.token_str(t.bos_id) if t.bos_id >= 0 else None,
            "adds_bos": t.adds_bos,
            "kind": _tokenizer_kind(t.to_str()),
        }
    params = meta.get("params")
    if not is_number(params):
        from lmkit.plan import count_params

        params = count_params(cfg).total
    return {
        "path": path,
        "cfg": cfg,
        "config": raw,
        "meta": meta,
        "run": run,
        "tokenizer": tok,
        "params": int(params),
        "quantization": raw.get("quantization"),
    }


# --------------------------------------------------------------------------- front matter


def _front_matter(
    f: dict[str, Any], name: str, license: str | None, language: Sequence[str] | None, export: bool
) -> dict[str, Any]:
    cfg, meta = f["cfg"], f["meta"]
    fam = cfg.family
    arch = hf_architecture(cfg)
    tags = ["lmkit", fam, {"decoder": "causal-lm", "encoder": "masked-lm", "encdec": "span-corruption"}[fam]]
    if arch:  # the transformers model type, e.g. llama, bert, roformer, t5
        tags.append(
            arch.removesuffix("ForCausalLM")
            .removesuffix("ForMaskedLM")
            .removesuffix("ForConditionalGeneration")
            .lower()
        )
    tags.append("pretrained")
    if f["quantization"]:
        tags.append("quantized")
    if meta.get("imported_from"):
        tags.append("imported")
    fm: dict[str, Any] = {"license": license or "unknown"}
    if language:
        fm["language"] = list(language)
    fm["library_name"] = "transformers" if export else "lmkit"
    fm["pipeline_tag"] = PIPELINE_TAG[fam]
    fm["tags"] = tags
    datasets = sorted(source_tokens(meta))
    if not datasets:  # no per-source record: the training inputs by name
        paths = (meta.get("data") or {}).get("paths") or []
        datasets = sorted({Path(str(p).rstrip("/")).name or str(p) for p in paths})
    if datasets:
        fm["datasets"] = datasets
    ev = meta.get("eval") or {}
    metric_ids = [
        m
        for k, m in (("loss", "loss"), ("perplexity", "perplexity"), ("bits_per_byte", "bits-per-byte"))
        if is_number(ev.get(k))
    ]
    if metric_ids:
        fm["metrics"] = metric_ids
        fm["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {
                            "type": PIPELINE_TAG[fam],
                            "name": {
                                "decoder": "Causal language modeling",
                                "encoder": "Masked language modeling",
                                "encdec": "Span corruption",
                            }[fam],
                        },
                        "dataset": {"name": "held-out split of the training data", "type": "held-out"},
                        "metrics": [
                            {
                                "type": m,
                                "value": round(float(ev[k]), 6),
                                "name": {
                                    "loss": "held-out loss (nats per scored token)",
                                    "perplexity": "perplexity",
                                    "bits_per_byte": "bits per byte",
                                }[k],
                            }
                            for k, m in (
                                ("loss", "loss"),
                                ("perplexity", "perplexity"),
                                ("bits_per_byte", "bits-per-byte"),
                            )
                            if is_number(ev.get(k))
                        ],
                    }
                ],
            }
        ]
    return fm


# --------------------------------------------------------------------------- the card


def _user_section(src: str | Path) -> str:
    p = Path(src)
    if not p.is_file():
        raise LmkitError(f"{p}: section file not found")
    try:
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise LmkitError(f"{p}: cannot read section ({e})") from None
    if not text:
        raise LmkitError(f"{p}: section file is empty")
    if not text.startswith("#"):
        text = f"## {p.stem.replace('_', ' ').replace('-', ' ').capitalize()}\n\n{text}"
    return text


def render_card(
    ckpt: str | Path,
    sections: Sequence[str | Path] = (),
    license: str | None = None,
    language: Sequence[str] | None = None,
    name: str | None = None,
    export: bool = False,
    load_path: str | None = None,
    hub_name: str | None = None,
) -> str:
    """The model card (Markdown with YAML front matter) of checkpoint ``ckpt``.

    ``sections``: Markdown files appended verbatim (a heading is added to one that lacks it).
    ``export``: the card of a transformers export (library_name transformers; loading code uses
    ``load_path``). ``hub_name``: the hub name to show in the pull command.
    """
    f = card_facts(ckpt)
    base = f["meta"].get("base_model") if isinstance(f["meta"].get("base_model"), dict) else {}
    license = license or base.get("license")  # a derived model keeps its base model's license unless told
    name = name or hub_name or default_name(f["path"])
    user = [_user_section(s) for s in sections]
    fm = _front_matter(f, name, license, language, export)
    if base.get("hub"):  # the hub's own key for "fine-tuned / continued from"
        fm["base_model"] = base["name"]
    body: list[str] = []
    body += model_section(f, name, export)
    body += training_section(f)
    body += evaluation_section(f)
    body += limitations_section(f)
    body += usage_section(f, export, load_path, hub_name)
    if not license:
        body += [f"License: {NOT_RECORDED} (set it with `lmkit card --license`).", ""]
    for s in user:
        body += [s, ""]
    head = yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, width=1000)
    text = f"---\n{head}---\n\n" + "\n".join(body).rstrip() + "\n"
    return f"---\n# written by lmkit card; {stamp(text)} of the card without this line\n" + text[len("---\n") :]


def parse_front_matter(text: str, source: str = "card") -> tuple[dict[str, Any], str]:
    """(YAML front matter as a dict, Markdown body) of a hub README; ({}, text) without front matter."""
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---\n", 4)
    if end < 0:
        raise LmkitError(f"{source}: front matter starts with --- but never ends")
    try:
        data = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as e:
        raise LmkitError(f"{source}: front matter is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LmkitError(f"{source}: front matter must be a mapping")
    return data, text[end + 5 :]


def is_card_file(path: Path) -> bool:
    """What ``card --overwrite`` may replace: a card lmkit wrote, unedited since (its stamp matches)."""
    return is_stamped(path)


def write_card(text: str, out: Path, overwrite: bool = False, sections: Sequence[str | Path] = ()) -> None:
    """Write card ``text`` to file ``out`` atomically; refuses to replace a file that is not a card
    unless ``overwrite``, and never writes over a section file it read or a weights/config file."""
    from lmkit.files import check_out_file

    if out.exists() and not overwrite:
        raise LmkitError(f"{out} already exists (use --overwrite to replace it, or --out - to print the card)")
    if out.exists() and out.is_dir():
        raise LmkitError(f"{out}: is a folder; give a file name such as README.md")
    # the card may go into the checkpoint folder, but never over a section it reads or a weights/config file
    check_out_file(
        out,
        overwrite,
        [*sections],
        ours=is_card_file,
        inside_inputs=True,
        kind="card (only a card lmkit wrote and nobody edited since is replaced)",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


__all__ = ["card_facts", "is_card_file", "parse_front_matter", "render_card", "write_card"]
