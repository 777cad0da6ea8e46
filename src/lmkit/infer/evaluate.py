"""Held-out evaluation: loss, perplexity and bits per byte of a model on packed token windows.

- loss: mean cross-entropy in nats of the objective's scored tokens;
- perplexity: exp(loss), the effective number of equally likely choices per token;
- bits per byte: total nats / ln 2 / UTF-8 bytes of the scored tokens — unlike perplexity it does
  not depend on the tokenizer, so models with different vocabularies compare fairly.

A token's bytes are the UTF-8 bytes it stands for (``Tokenizer.token_bytes``); special tokens
count zero bytes. A decoder's bytes are counted where each token stands: SentencePiece puts a
``▁`` before a document's first token that is no byte of the text (:func:`window_bytes` takes it
off after the document separator or BOS), and held-out text read here carries the bytes of the
text each token covers (``Tokenizer.encode_with_bytes``), so that its bits per byte are exact for
every kind of tokenizer (a normalizer such as Qwen's NFC included).

Also here: the held-out data of a checkpoint (``held_out``: a packed shard folder, raw text files
packed with the model's own tokenizer, or the run's own validation shards) and
``evaluate_checkpoint``, which scores any checkpoint, quantized or imported ones included, for
``lmkit evaluate CKPT [--data PATH...]`` (its flags and printing: ``lmkit.cli.infer``) as ``lmkit
quantize`` does in its before/after report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.models import LanguageModel
from lmkit.models.registry import spec_of
from lmkit.objectives import IGNORE_INDEX, SpecialIds, make_batch, window_length


def token_byte_lengths(tokenizer: Any) -> torch.Tensor:
    """(vocab,) number of UTF-8 bytes each token id stands for (0 for special tokens)."""
    lengths = torch.zeros(tokenizer.vocab_size, dtype=torch.float64)
    for i in range(tokenizer.vocab_size):
        if i not in tokenizer.special_ids:
            lengths[i] = len(tokenizer.token_bytes(i))
    return lengths


def window_bytes(tokenizer: Any, table: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, L) windows -> (B, L) bytes each token stands for where it stands: ``table``'s, less the
    space a SentencePiece tokenizer put before a document's first token (one right after the
    document separator or BOS); a text that began with a space itself is then one byte short."""
    starts = torch.tensor([i for i in {tokenizer.separator_id, tokenizer.bos_id} if i >= 0], dtype=torch.long)
    lead = torch.zeros(len(table), dtype=torch.float64)
    if tokenizer.space_before_text:
        for i in range(len(table)):
            lead[i] = float(i not in tokenizer.special_ids and tokenizer.token_bytes(i)[:1] == b" ")

    def place(windows: torch.Tensor) -> torch.Tensor:
        out = table[windows.clamp(max=len(table) - 1)]
        if tokenizer.space_before_text:
            after = torch.zeros_like(windows, dtype=torch.bool)
            after[:, 1:] = torch.isin(windows[:, :-1], starts)
            out = out - after * lead[windows.clamp(max=len(table) - 1)]
        return out

    return place


@torch.no_grad()
def evaluate(
    model: LanguageModel,
    shards: Any,
    model_cfg: ModelConfig,
    specials: SpecialIds,
    batch_size: int,
    max_batches: int,
    token_bytes: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    autocast: torch.autocast | None = None,
    loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
    placed_bytes: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Loss, perplexity and bits per byte over up to ``max_batches`` held-out windows.

    ``loss_fn`` (default ``model.loss``) lets a distributed wrapper (DDP/FSDP) run the forward pass.
    A decoder's scored bytes are counted where the tokens stand: the windows' own bytes when
    ``shards`` carries them (held-out text), else ``placed_bytes(windows)`` (:func:`window_bytes`),
    else the ``token_bytes`` table.
    """
    loss_fn = loss_fn if loss_fn is not None else model.loss
    was_training = model.training
    model.eval()
    total_nats = 0.0
    total_tokens = 0
    total_bytes = 0.0
    length = window_length(model_cfg)
    shifted = spec_of(model_cfg.family).decodes == "causal"  # labels are the windows shifted by one
    gen = torch.Generator().manual_seed(seed)
    own = getattr(shards, "sequential_byte_batches", None)
    own_bytes = own(batch_size, length, max_batches) if own is not None else None
    for windows in shards.sequential_batches(batch_size, length, max_batches):
        placed = next(own_bytes) if own_bytes is not None else placed_bytes(windows) if placed_bytes else None
        batch = make_batch(model_cfg, windows, specials, gen)
        labels = batch["labels"]
        n = int((labels != IGNORE_INDEX).sum())
        if n == 0:
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        if autocast is not None:
            with autocast:
                loss = loss_fn(batch)
        else:
            loss = loss_fn(batch)
        total_nats += float(loss) * n
        total_tokens += n
        if token_bytes is not None and placed is not None and shifted:
            total_bytes += float(placed[:, 1:][labels != IGNORE_INDEX].sum())  # labels are windows[:, 1:]
        elif token_bytes is not None:
            scored = labels[labels != IGNORE_INDEX]
            total_bytes += float(token_bytes[scored.clamp(max=len(token_bytes) - 1)].sum())
    model.train(was_training)
    if total_tokens == 0:
        return {}
    mean_nats = total_nats / total_tokens
    out = {"loss": mean_nats, "perplexity": math.exp(min(mean_nats, 50.0)), "tokens": float(total_tokens)}
    if token_bytes is not None and total_bytes > 0:
        out["bits_per_byte"] = total_nats / math.log(2) / total_bytes
    return out


# --------------------------------------------------------------------------- a checkpoint on held-out data


class _TextWindows:
    """Held-out windows from raw text files, packed in memory with the model's own tokenizer as
    :func:`lmkit.data.pack.pack` packs them (BOS first where the tokenizer adds it, the document
    separator after each document), with the bytes of the text each token covers (the interface
    ``evaluate`` needs)."""

    def __init__(
        self, paths: Sequence[str], tokenizer: Any, text_field: str = "text", max_tokens: int = 2_000_000
    ) -> None:
        from lmkit.data.read import iter_documents

        sep = tokenizer.require("separator", "evaluating on text (it goes between documents)")
        bos = [tokenizer.bos_id] if tokenizer.adds_bos else []
        ids: list[int] = []
        nbytes: list[int] = []
        for doc in iter_documents(list(paths), text_field=text_field):
            doc_ids, pieces = tokenizer.encode_with_bytes(doc.text)
            ids += [*bos, *doc_ids, sep]
            nbytes += [0] * len(bos) + [len(p) for p in pieces] + [0]
            if len(ids) >= max_tokens:
                break
        self.tokens = torch.tensor(ids, dtype=torch.int64)
        self.bytes = torch.tensor(nbytes, dtype=torch.float64)

    def _rows(
        self, values: torch.Tensor, batch_size: int, length: int, max_batches: int | None
    ) -> Iterator[torch.Tensor]:
        n = len(self.tokens) // length
        if n == 0:
            raise LmkitError(f"the held-out text has {len(self.tokens):,} tokens, fewer than one window of {length:,}")
        rows = values[: n * length].view(n, length)
        for i, s in enumerate(range(0, n, batch_size)):
            if max_batches is not None and i >= max_batches:
                return
            yield rows[s : s + batch_size]

    def sequential_batches(
        self, batch_size: int, length: int, max_batches: int | None = None
    ) -> Iterator[torch.Tensor]:
        return self._rows(self.tokens, batch_size, length, max_batches)

    def sequential_byte_batches(
        self, batch_size: int, length: int, max_batches: int | None = None
    ) -> Iterator[torch.Tensor]:
        """The bytes of text each token of :meth:`sequential_batches`' windows covers, window by window."""
        return self._rows(self.bytes, batch_size, length, max_batches)


def held_out(
    ckpt: Path, data: str | Sequence[str] | None, tokenizer: Any, text_field: str = "text"
) -> tuple[Any, str] | None:
    """Held-out token windows: --data (a shard folder, one split, or text files and folders, packed
    with the model's own tokenizer), else the run's own validation shards if they are still where the
    checkpoint's run config says."""
    from lmkit.data.shards import TokenShards, is_shard_folder

    paths = [data] if isinstance(data, str) else list(data or [])
    if paths:
        p = Path(paths[0])
        packed = [q for q in paths if is_shard_folder(q) or (Path(q) / "meta.json").is_file()]
        if packed and len(paths) > 1:
            raise LmkitError(f"--data {packed[0]}: a packed shard folder is held-out data alone (give it by itself)")
        if is_shard_folder(p):
            shards = TokenShards(p / "val")
        elif (p / "meta.json").is_file() and p.is_dir():
            shards = TokenShards(p)
        else:
            return _TextWindows(paths, tokenizer, text_field), f"text in {', '.join(paths)}"
        if shards.tokenizer_sha256 != tokenizer.sha256:
            raise LmkitError(f"{shards.folder}: packed with another tokenizer than {ckpt}'s")
        return shards, str(shards.folder)
    resolved = ckpt / "resolved.yaml"
    if not resolved.is_file():
        return None
    from lmkit.config_io import load_yaml

    raw = load_yaml(resolved)
    d = raw.get("data") or {}
    candidates = [d.get("shards"), str(Path(str(raw.get("out", ""))) / "shards") if raw.get("out") else None]
    for c in candidates:
        if c and is_shard_folder(c):
            shards = TokenShards(Path(c) / "val")
            if shards.tokenizer_sha256 == tokenizer.sha256:
                return shards, str(shards.folder)
    return None


def evaluate_model(
    model: LanguageModel, cfg: ModelConfig, windows: Any, tokenizer: Any, batch_size: int, max_batches: int
) -> dict[str, float]:
    """Held-out loss, perplexity and bits per byte of ``model`` on ``windows``, specials from ``tokenizer``."""
    specials = tokenizer.special_ids_for_objectives()
    table = token_byte_lengths(tokenizer)
    return evaluate(
        model,
        windows,
        cfg,
        specials,
        batch_size=batch_size,
        max_batches=max_batches,
        token_bytes=table,
        placed_bytes=window_bytes(tokenizer, table),
    )


def checkpoint_format(cfg_raw: dict[str, Any]) -> str:
    """How a checkpoint's weights are stored: fp32, or the target of ``lmkit quantize`` (fp16, bf16, int8)."""
    quant = cfg_raw.get("quantization") or {}
    return str(quant.get("dtype", "fp32"))


def evaluate_checkpoint(
    ckpt: str | Path,
    data: str | Sequence[str] | None = None,
    batches: int = 8,
    batch_size: int = 8,
    text_field: str = "text",
) -> dict[str, Any]:
    """Held-out loss, perplexity and bits per byte of a checkpoint, quantized or not (``lmkit evaluate``).

    The model is loaded by ``lmkit.models.checkpoint.load_model``, so an int8 checkpoint is evaluated with its
    int8 weights, as ``lmkit generate`` runs it. Held-out data: ``data`` (a packed shard folder, one
    split of it, or text files and folders: an imported model has no shards of its own), else the
    run's own validation shards when they are still found.
    """
    from lmkit.models.checkpoint import load_meta, load_model, load_tokenizer, read_config, resolve_checkpoint
    from lmkit.models.int8 import memory_bytes

    if batches < 1 or batch_size < 1:
        raise LmkitError(f"--batches and --batch-size must be at least 1, got {batches} and {batch_size}")
    src = resolve_checkpoint(ckpt)
    cfg_raw = read_config(src)
    if not (src / "tokenizer.json").is_file():
        raise LmkitError(f"{src}: no tokenizer.json, so there is no held-out text to score it on")
    from lmkit.config import model_config_from_dict

    model_cfg = model_config_from_dict(cfg_raw["model"])
    tok = load_tokenizer(src)
    windows = held_out(src, data, tok, text_field)
    if windows is None:
        whose = (
            "an imported model has no held-out data of its own"
            if "imported_from" in load_meta(src)
            else ("its run's validation shards were not found")
        )
        raise LmkitError(f"{src}: {whose}; pass --data (your text files, or a shard folder)")
    model = load_model(src)
    result = evaluate_model(model, model_cfg, windows[0], tok, batch_size, batches)
    if not result:
        raise LmkitError(f"{windows[1]}: no token was scored (the held-out data is empty or all padding)")
    return {
        "checkpoint": str(src),
        "format": checkpoint_format(cfg_raw),
        "family": model_cfg.family,
        "memory_bytes": memory_bytes(model),
        "held_out": windows[1],
        **result,
    }
