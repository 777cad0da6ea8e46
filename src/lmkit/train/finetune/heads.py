"""The heads put on a pre-trained encoder, and the fine-tuned checkpoint that holds them.

* :class:`SequenceClassifier`: the mean of the encoder's states over the real tokens, then a
  linear layer: one label per text;
* :class:`TokenClassifier`: a linear layer on every token's state: one label per word, scored on
  the word's first token, as BERT's NER recipe does;
* the checkpoint (``lmkit finetune-head --out``): the fine-tuned encoder stays a normal encoder
  checkpoint (``model.safetensors``) and the head is ``head.safetensors`` beside it, described by
  ``config.json``'s ``finetune`` entry; :func:`save_finetuned` writes it, :func:`load_finetuned`
  reads both back as a :class:`Finetuned` that labels new inputs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lmkit.errors import LmkitError
from lmkit.models import LanguageModel
from lmkit.models.encoder import Encoder
from lmkit.train.finetune.data import IGNORE_INDEX, FinetuneConfig, encode_text, encode_words, index_batches, pad

HEAD_FILE = "head.safetensors"


def _linear_head(d_model: int, n_labels: int) -> nn.Linear:
    """A fresh classification layer: Normal(0, 0.02) weights, zero bias."""
    head = nn.Linear(d_model, n_labels)
    nn.init.normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


class Classifier(nn.Module):
    """An encoder with dropout and a fresh linear classifier on top (the two heads' shared parts)."""

    def __init__(self, encoder: Encoder, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = _linear_head(encoder.cfg.d_model, n_labels)


class SequenceClassifier(Classifier):
    """Encoder + mean over real tokens + dropout + linear: one label per text. logits (B, n_labels)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder.hidden_states(input_ids, attention_mask)  # (B, T, C)
        m = attention_mask.to(h.dtype)[:, :, None]  # (B, T, 1)
        pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, C)
        return self.classifier(self.dropout(pooled))  # (B, n_labels)


class TokenClassifier(Classifier):
    """Encoder + dropout + linear on every token: one label per token. logits (B, T, n_labels)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.encoder.hidden_states(input_ids, attention_mask)))


@torch.no_grad()
def predict_classes(
    model: nn.Module, items: list[tuple[list[int], Any]], task: str, pad_id: int, batch_size: int, device: torch.device
) -> list[Any]:
    """Predicted label indices: one per text, or one list per text (one per scored word)."""
    model.eval()
    preds: list[Any] = []
    for idx in index_batches(len(items), batch_size, None):
        ids = pad([items[i][0] for i in idx], pad_id).to(device)
        mask = pad([[1] * len(items[i][0]) for i in idx], 0).to(device)
        logits = model(ids, mask)
        if task == "sequence-classification":
            preds.extend(logits.argmax(-1).tolist())
        else:
            best = logits.argmax(-1).cpu()
            for row, i in enumerate(idx):
                labs = torch.tensor(items[i][1])
                preds.append(best[row, : len(labs)][labs != IGNORE_INDEX].tolist())
    return preds


def save_finetuned(
    out: str | Path,
    model: Classifier | LanguageModel,
    tokenizer: Any,
    cfg: FinetuneConfig,
    report: dict[str, Any],
    base: str,
    overwrite: bool = False,
) -> Path:
    """Write the fine-tuned model as a checkpoint folder (atomically); the head goes to head.safetensors."""
    from safetensors.torch import save_file

    from lmkit.files import Manifest, check_out_dir, replace_dir
    from lmkit.models.checkpoint import checkpoint_files, save_checkpoint

    final = Path(out)
    check_out_dir(final, overwrite, [base], ours=Manifest(checkpoint_files), kind="checkpoint")
    head = cast(Classifier, model) if hasattr(model, "classifier") else None  # only a Classifier has one
    body = head.encoder if head is not None else cast(LanguageModel, model)
    info: dict[str, Any] = {"task": cfg.task, "base_checkpoint": base, "settings": asdict(cfg)}
    if head is not None:
        info.update(
            {
                "labels": report["labels"],
                "pooling": "mean" if cfg.task == "sequence-classification" else None,
                "head_file": HEAD_FILE,
            }
        )
    meta = {"finetune": {k: v for k, v in report.items() if k not in ("examples",)}, "family": body.cfg.family}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        staged = save_checkpoint(
            tmp_parent / "ckpt", body, body.cfg, tokenizer=tokenizer, meta=meta, extra_config={"finetune": info}
        )
        if head is not None:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in head.classifier.state_dict().items()},
                str(staged / HEAD_FILE),
            )
            from lmkit.models.checkpoint import record_checksums

            record_checksums(staged)  # meta.json's checksums cover the head too
        replace_dir(staged, final)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return final


@dataclass
class Finetuned:
    """A fine-tuned classifier read back from disk, ready to label new inputs."""

    model: Classifier
    tokenizer: Any
    task: str
    labels: list[str]

    @torch.no_grad()
    def predict(self, inputs: Sequence[str] | Sequence[Sequence[str]]) -> list[Any]:
        """Labels of texts (sequence-classification) or of each word of word lists (token-classification)."""
        device = self.model.classifier.weight.device
        max_len = self.model.encoder.cfg.max_seq_len
        items: list[tuple[list[int], Any]]
        if self.task == "sequence-classification":
            items = [(encode_text(self.tokenizer, cast(str, t), max_len), 0) for t in inputs]  # texts
        else:
            items = []
            for words in inputs:
                ids, labs, _ = encode_words(self.tokenizer, list(words), [0] * len(words), max_len)
                items.append((ids, labs))
        preds = predict_classes(self.model, items, self.task, self.tokenizer.pad_id, 32, device)
        if self.task == "sequence-classification":
            return [self.labels[p] for p in preds]
        return [[self.labels[p] for p in ps] for ps in preds]


def load_finetuned(path: str | Path, device: str | torch.device = "cpu") -> Finetuned:
    """A classifier saved by ``lmkit finetune-head --out`` (encoder + head)."""
    from safetensors.torch import load_file

    from lmkit.models.checkpoint import load_model, load_tokenizer, read_config, resolve_checkpoint, verify_file

    ckpt = resolve_checkpoint(path)
    info = read_config(ckpt).get("finetune")
    if not info or info.get("task") not in ("sequence-classification", "token-classification"):
        raise LmkitError(
            f"{ckpt}: not a fine-tuned classifier (no finetune entry with a classification task in config.json)"
        )
    encoder = load_model(ckpt, device=device)
    head_cls = SequenceClassifier if info["task"] == "sequence-classification" else TokenClassifier
    model = head_cls(cast(Encoder, encoder), len(info["labels"]))  # a classifier's body is an encoder
    head_file = str(info.get("head_file", HEAD_FILE))
    if (ckpt / head_file).is_file():
        verify_file(ckpt, head_file)
    try:
        model.classifier.load_state_dict(load_file(str(ckpt / head_file)))
    except (OSError, RuntimeError) as e:
        raise LmkitError(f"{ckpt / HEAD_FILE}: cannot load the classification head ({e})") from None
    return Finetuned(model.to(device).eval(), load_tokenizer(ckpt), info["task"], list(info["labels"]))
