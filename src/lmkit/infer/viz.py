"""Seeing inside a model: attention maps and token-embedding projections (``lmkit viz``).

* :func:`attention_maps` runs a text through a checkpoint's model once and returns every
  self-attention layer's weights, (layers, heads, tokens, tokens): row i of a head's map is how
  token i spreads its attention over the tokens (each row sums to 1). Decoders attend only to
  earlier tokens (the upper triangle is empty); encoders and the encoder of an encoder-decoder
  attend both ways. The weights are captured by hooks on the model's own attention modules, which
  recompute softmax(q·kᵀ·scale + bias) with the inputs each layer really received (positions,
  masks, T5's relative position bias), so any family is drawn without a second copy of its code.
  :func:`head_summary` says where each head looks on average (itself, the previous or the next
  token, the first token). :func:`plot_attention` draws the grid of heat maps (rows: layers,
  columns: heads).
* :func:`embedding_projection` takes the input embeddings of chosen words (a word split into
  several tokens is the mean of their vectors), projects them onto their first 2 or 3 principal
  components (PCA by SVD) and computes the cosine similarity, and the angle, between every pair;
  :func:`plot_embeddings` draws the projection.

Pictures are PNG files, written atomically (a temporary sibling, then renamed), each carrying
lmkit's stamp (:func:`lmkit.files.stamp_png`); ``--overwrite`` replaces only a picture lmkit drew
that nobody has changed since (:func:`lmkit.files.is_stamped_png`), never the user's own PNG.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lmkit.errors import LmkitError
from lmkit.models import LanguageModel
from lmkit.models.decoder import Decoder
from lmkit.models.encdec import EncoderDecoder
from lmkit.models.encoder import Encoder
from lmkit.models.protocols import Seq2SeqLM
from lmkit.models.registry import spec_of

# --------------------------------------------------------------------------- attention


@dataclass
class AttentionMaps:
    """Self-attention weights of one text: ``weights`` (layers, heads, T, T) and the T token strings."""

    tokens: list[str]
    weights: torch.Tensor
    family: str
    stack: str  # which attention was captured, in words


def _self_attention_modules(model: LanguageModel) -> tuple[list[nn.Module], str]:
    from lmkit.models.layers import Attention

    attention = spec_of(model.cfg.family).attention
    blocks: Iterable[nn.Module]
    if attention == "encoder-decoder":
        blocks, what = cast(EncoderDecoder, model).encoder.blocks, "encoder self-attention (bidirectional)"
    else:
        blocks = cast(Decoder | Encoder, model).blocks  # the other two families
        what = "self-attention (bidirectional)" if attention == "bidirectional" else "causal self-attention"
    mods = [cast(nn.Module, b.attn) for b in blocks]  # every family's blocks have an ``attn`` module
    if not all(isinstance(m, Attention) for m in mods):
        raise LmkitError("this model's attention layers cannot be inspected (a quantized checkpoint?)")
    return mods, what


@torch.no_grad()
def capture_attention(model: LanguageModel, input_ids: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Self-attention weights (layers, heads, T, T) of the first row of input_ids (B, T)."""
    modules, what = _self_attention_modules(model)
    captured: dict[int, torch.Tensor] = {}

    def hook(index: int):
        def fn(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            # the same call again, asking for the weights (forward() itself does not run hooks)
            _, w = module.forward(*args, **{**kwargs, "cache": None, "return_weights": True})
            captured[index] = w[0].float().cpu()  # (H, T, T)

        return fn

    handles = [m.register_forward_hook(hook(i), with_kwargs=True) for i, m in enumerate(modules)]
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, Seq2SeqLM):  # its encoder's self-attention
            model.encode(input_ids)
        else:
            model(input_ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return torch.stack([captured[i] for i in range(len(modules))]), what


def attention_maps(model: LanguageModel, tokenizer: Any, text: str) -> AttentionMaps:
    """Attention weights of every layer and head over the tokens of ``text``, read as the model reads it
    elsewhere: a decoder's prompt (BOS first only where its tokenizer adds one: ``Tokenizer.prompt_ids``),
    an encoder-decoder's input (``Tokenizer.encoder_ids``: T5's text + EOS, BART's ``<s> .. </s>``),
    an encoder's text as fill-mask wraps it (``Tokenizer.wrap``: BERT's ``[CLS] .. [SEP]``)."""
    if not tokenizer.encode(text, allow_special=True):
        raise LmkitError("the text is empty: give a sentence to draw its attention")
    decodes = spec_of(model.cfg.family).decodes
    if decodes == "causal":
        ids = tokenizer.prompt_ids(text, allow_special=True)
    elif decodes == "seq2seq":
        ids = tokenizer.encoder_ids(text)
    else:
        ids = tokenizer.wrap(tokenizer.encode(text, allow_special=True))
    if len(ids) > model.cfg.max_seq_len:
        raise LmkitError(f"the text is {len(ids)} tokens but the context window is {model.cfg.max_seq_len}")
    device = model.output_weight.device
    weights, what = capture_attention(model, torch.tensor([ids], device=device))
    return AttentionMaps([tokenizer.token_str(i) for i in ids], weights, model.cfg.family, what)


def head_summary(maps: AttentionMaps) -> list[dict[str, Any]]:
    """Per layer and head: the average attention on the token itself, the previous and next token,
    the first token, and the entropy of the rows (bits; 0 = always one token)."""
    w = maps.weights  # (L, H, T, T)
    T = w.shape[-1]
    out = []
    for layer in range(w.shape[0]):
        for head in range(w.shape[1]):
            m = w[layer, head]
            row: dict[str, Any] = {
                "layer": layer,
                "head": head,
                "self": float(m.diagonal().mean()),
                "previous": float(m.diagonal(-1).mean()) if T > 1 else 0.0,
                "next": float(m.diagonal(1).mean()) if T > 1 else 0.0,
                "first": float(m[:, 0].mean()),
                "entropy_bits": float(-(m * m.clamp(min=1e-12).log2()).sum(-1).mean()),
            }
            kinds = {k: row[k] for k in ("self", "previous", "next", "first")}
            best = max(kinds, key=lambda k: kinds[k])
            row["mostly"] = best if kinds[best] >= 0.5 else "spread"
            out.append(row)
    return out


def check_out_picture(out: str | Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> None:
    """The shared output check for a picture: a ``.png`` name, may sit in the checkpoint folder, and
    ``--overwrite`` replaces only a picture lmkit drew and nobody has changed since."""
    from lmkit.files import check_out_file, is_stamped_png

    check_out_file(
        out,
        overwrite,
        inputs,
        ours=is_stamped_png,
        kind="picture (only a picture lmkit drew and nobody changed since is replaced)",
        inside_inputs=True,
    )
    if Path(out).suffix.lower() != ".png":
        raise LmkitError(f"--out {out}: viz draws PNG pictures; give a file name ending in .png")


def _atomic_savefig(fig: Any, out: Path, overwrite: bool) -> Path:
    import io

    from lmkit.files import stamp_png, write_bytes_atomic

    check_out_picture(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(out, stamp_png(buf.getvalue(), "lmkit viz"))
    return out


def plot_attention(
    maps: AttentionMaps,
    out: str | Path,
    overwrite: bool = False,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> Path:
    """A grid of token × token heat maps (rows: layers, columns: heads) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L, H, T, _ = maps.weights.shape
    layers = list(range(L)) if layers is None else list(layers)
    heads = list(range(H)) if heads is None else list(heads)
    for x, n, what in ((layers, L, "layer"), (heads, H, "head")):
        bad = [i for i in x if not 0 <= i < n]
        if bad:
            raise LmkitError(f"no {what} {bad[0]}: the model has {n} {what}s (numbered 0..{n - 1})")
    cell = max(2.2, min(5.0, 0.16 * T + 1.2))
    fig, axes = plt.subplots(
        len(layers),
        len(heads),
        figsize=(cell * len(heads) + 0.8, cell * len(layers) + 0.8),
        squeeze=False,
        dpi=100,
        layout="constrained",
    )
    labels = [t if len(t) <= 12 else t[:11] + "…" for t in maps.tokens]
    show_labels = T <= 40
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(maps.weights[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="equal")
            ax.set_title(f"layer {layer} head {head}", fontsize=9)
            if show_labels:
                ax.set_xticks(range(T))
                ax.set_yticks(range(T))
                ax.set_xticklabels(labels, rotation=90, fontsize=6)
                ax.set_yticklabels(labels, fontsize=6)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            if c == 0:
                ax.set_ylabel("query (attending) token", fontsize=7)
            if r == len(layers) - 1:
                ax.set_xlabel("key (attended) token", fontsize=7)
    fig.suptitle(f"{maps.family}: {maps.stack}, {T} tokens", fontsize=11)
    try:
        return _atomic_savefig(fig, Path(out), overwrite)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- embeddings


@dataclass
class EmbeddingProjection:
    """Words, their token pieces, coordinates (n, dims), explained variance and pairwise cosines."""

    words: list[str]
    pieces: list[list[str]]
    coords: torch.Tensor  # (n, dims)
    explained: list[float]  # share of the variance each component keeps
    cosine: torch.Tensor  # (n, n)
    vectors: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0))  # (n, d_model)

    @property
    def angles(self) -> torch.Tensor:
        """Angles in degrees between the word vectors, (n, n)."""
        return torch.rad2deg(torch.arccos(self.cosine.clamp(-1.0, 1.0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": self.words,
            "pieces": self.pieces,
            "coords": self.coords.tolist(),
            "explained_variance": self.explained,
            "cosine": self.cosine.tolist(),
            "angle_degrees": self.angles.tolist(),
        }


def word_vector(model: LanguageModel, tokenizer: Any, word: str) -> tuple[torch.Tensor, list[str]]:
    """The input embedding of ``word``: the mean over its tokens, as it appears inside running text
    (with a leading space) unless it is a single token only without one."""
    spaced = tokenizer.encode(" " + word.strip())
    bare = tokenizer.encode(word.strip())
    ids = bare if len(bare) < len(spaced) else spaced
    if not ids:
        raise LmkitError(f"the word {word!r} encodes to no tokens")
    table = model.tok_emb.weight.detach().float().cpu()
    return table[ids].mean(dim=0), [tokenizer.token_str(i) for i in ids]


def embedding_projection(
    model: LanguageModel, tokenizer: Any, words: Sequence[str], dims: int = 2
) -> EmbeddingProjection:
    """PCA of the words' input embeddings onto ``dims`` components, and their pairwise cosines."""
    if dims not in (2, 3):
        raise LmkitError(f"--dims must be 2 or 3, got {dims}")
    words = [w for w in words if w.strip()]
    if len(words) < 2:
        raise LmkitError("give at least two words (--words w1 w2 ...) to compare")
    vecs, pieces = zip(*(word_vector(model, tokenizer, w) for w in words))
    X = torch.stack(vecs)  # (n, d)
    unit = X / X.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cosine = unit @ unit.t()  # (n, n)
    centred = X - X.mean(dim=0, keepdim=True)
    _, S, Vh = torch.linalg.svd(centred, full_matrices=False)  # principal axes in the rows of Vh
    k = min(dims, Vh.shape[0])
    coords = torch.zeros(len(words), dims)
    coords[:, :k] = centred @ Vh[:k].t()
    var = S**2
    explained = [float(v) for v in (var[:k] / var.sum().clamp(min=1e-12))] + [0.0] * (dims - k)
    return EmbeddingProjection(list(words), [list(p) for p in pieces], coords, explained, cosine, X)


def plot_embeddings(proj: EmbeddingProjection, out: str | Path, overwrite: bool = False) -> Path:
    """Scatter plot of the projected words (2-D, or 3-D with ``dims=3``) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = proj.coords.shape[1]
    fig = plt.figure(figsize=(6.5, 5.5), dpi=110)
    if dims == 3:
        ax = fig.add_subplot(projection="3d")
        x, y, z = proj.coords.t().tolist()
        ax.scatter(x, y, z, s=30)
        for w, a, b, c in zip(proj.words, x, y, z):
            ax.text(a, b, c, f" {w}", fontsize=9)
        ax.set_zlabel(f"PC3 ({proj.explained[2]:.0%})")
    else:
        ax = fig.add_subplot()
        x, y = proj.coords.t().tolist()
        ax.scatter(x, y, s=30)
        for w, a, b in zip(proj.words, x, y):
            ax.annotate(w, (a, b), textcoords="offset points", xytext=(4, 4), fontsize=9)
        ax.grid(alpha=0.3)
    ax.set_xlabel(f"PC1 ({proj.explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({proj.explained[1]:.0%})")
    ax.set_title("Token embeddings, PCA projection")
    fig.tight_layout()
    try:
        return _atomic_savefig(fig, Path(out), overwrite)
    finally:
        plt.close(fig)


def format_similarity(proj: EmbeddingProjection) -> str:
    """The cosine similarity and angle of every pair of words, most similar first."""
    n = len(proj.words)
    pairs = sorted(((float(proj.cosine[i, j]), i, j) for i in range(n) for j in range(i + 1, n)), reverse=True)
    w = max(len(x) for x in proj.words)
    lines = [f"  {'word':<{w}}  {'word':<{w}}  cosine   angle"]
    angles = proj.angles
    for cos, i, j in pairs:
        lines.append(f"  {proj.words[i]:<{w}}  {proj.words[j]:<{w}}  {cos:6.3f}  {float(angles[i, j]):5.1f}°")
    return "\n".join(lines)


def dims_text(proj: EmbeddingProjection) -> str:
    """'PC1 41%, PC2 22% (63% of the variance)'."""
    parts = [f"PC{i + 1} {e:.0%}" for i, e in enumerate(proj.explained)]
    return ", ".join(parts) + f" ({sum(proj.explained):.0%} of the variance)"


__all__ = [
    "AttentionMaps",
    "EmbeddingProjection",
    "attention_maps",
    "capture_attention",
    "dims_text",
    "embedding_projection",
    "format_similarity",
    "head_summary",
    "plot_attention",
    "plot_embeddings",
    "word_vector",
]
