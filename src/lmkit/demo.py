"""``lmkit demo``: the whole pipeline on a built-in default corpus, in minutes on a laptop CPU.

The default corpus is real English text found on the machine at run time (nothing is copied
into the repository): the license texts of ``/usr/share/common-licenses``, the per-package
``/usr/share/doc/*/copyright`` files of a Debian-like system (legal text with heavy natural
duplication, which curation then shows), the HTML documentation pages under ``/usr/share/doc``
(their main text, through lmkit's HTML reader; at most :data:`SOURCE_SHARE` of the corpus), the
docstrings of Python's standard library (read with ``ast``, nothing is imported), and, when
installed, Debian text packages such as ``fortunes``.
Whatever is missing is skipped; the demo stops with a clear message only when less than
``MIN_CORPUS_BYTES`` of text is found at all.

Steps: gather → curate → train a tokenizer → pack → plan → pre-train a small decoder → evaluate →
generate → quantize → model card → publish to a local hub. Every artefact's path is printed.

The model and its int8 copy are scored on the same held-out tokens: the windows of the run's last
evaluation (the run's validation split, never trained on), so the summary's two sets of held-out
figures differ only by what int8 storage does to the weights.
"""

from __future__ import annotations

import ast
import glob
import gzip
import json
import os
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError

MIN_CORPUS_BYTES = 200_000


def _license_docs() -> Iterator[tuple[str, str, str]]:
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path) and not os.path.islink(path):
            yield from _file_doc(path, "common-licenses")


def _copyright_docs() -> Iterator[tuple[str, str, str]]:
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        yield from _file_doc(path, "debian-copyright")


def _file_doc(path: str, source: str) -> Iterator[tuple[str, str, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    if text.strip():
        yield path, text, source


def _html_docs() -> Iterator[tuple[str, str, str]]:
    """The main text of the machine's HTML documentation pages (lmkit's HTML reader and extractor)."""
    from lmkit.data.read import iter_documents

    for path in sorted(glob.glob("/usr/share/doc/**/*.htm*", recursive=True)):
        if not os.path.isfile(path) or os.path.islink(path) or not path.endswith((".html", ".htm")):
            continue
        for doc in iter_documents([path], lenient=True):
            yield doc.id, (f"{doc.title}\n\n{doc.text}" if doc.title else doc.text), "html-docs"


def _fortune_docs() -> Iterator[tuple[str, str, str]]:
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if path.endswith(".dat") or not os.path.isfile(path):
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for i, piece in enumerate(text.split("\n%\n")):
            if piece.strip():
                yield f"{path}:{i}", piece.strip(), "fortunes"


def _docstring_docs(limit_files: int = 4000) -> Iterator[tuple[str, str, str]]:
    """Module, class and function docstrings of the standard library, one document per module."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "test" not in p.parts and "site-packages" not in p.parts)
    for path in files[:limit_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        parts = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    parts.append(doc)
        if parts:
            yield str(path), "\n\n".join(parts), "python-docstrings"


SOURCES = {
    "common-licenses": _license_docs,
    "html-docs": _html_docs,
    "debian-copyright": _copyright_docs,
    "python-docstrings": _docstring_docs,
    "fortunes": _fortune_docs,
}
# the most of the corpus one source may take (others: whatever is left when its turn comes)
SOURCE_SHARE = {"html-docs": 0.15}


def gather_default_corpus(out_dir: str | Path, max_bytes: int = 24_000_000) -> dict[str, Any]:
    """Write the default corpus as ``out_dir/<source>.jsonl.gz`` files; return what was found."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {}
    total = 0
    for name, gen in SOURCES.items():
        n_docs = n_bytes = 0
        path = out / f"{name}.jsonl.gz"
        tmp = path.with_suffix(".tmp")
        cap = max_bytes * SOURCE_SHARE.get(name, 1.0)
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            for doc_id, text, source in gen():
                if total + n_bytes >= max_bytes or n_bytes >= cap:
                    break
                f.write(json.dumps({"id": doc_id, "text": text, "source": source}) + "\n")
                n_docs += 1
                n_bytes += len(text.encode("utf-8"))
        if n_docs:
            os.replace(tmp, path)
            found[name] = {"documents": n_docs, "bytes": n_bytes, "file": str(path)}
            total += n_bytes
        else:
            tmp.unlink()
    if total < MIN_CORPUS_BYTES:
        raise LmkitError(
            f"found only {total:,} bytes of text for the default corpus (need {MIN_CORPUS_BYTES:,}); "
            "pass your own text: lmkit demo --data PATH"
        )
    return found


# --------------------------------------------------------------------------- the pipeline


def _fresh_out(out: Path) -> Path:
    """``out`` if it is new or empty, else the first free ``out-2``, ``out-3``, ... (nothing is overwritten)."""
    if out.exists() and not out.is_dir():
        raise LmkitError(f"--out {out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return out
    i = 2
    while True:
        cand = out.with_name(f"{out.name}-{i}")
        if not cand.exists():
            return cand
        i += 1


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def demo_run_config(out: Path, data: list[str], tokenizer: str, train_seconds: float, quick: bool):
    """The small decoder the demo trains: sized so a 2-core CPU sees many steps in the budget."""
    from lmkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    if quick:
        model = ModelConfig(family="decoder", vocab_size=512, d_model=64, n_layers=2, n_heads=4, max_seq_len=64)
        train = TrainConfig(
            batch_size=8,
            lr=3e-3,
            warmup_steps=5,
            max_steps=40,
            eval_every=20,
            eval_batches=8,
            log_every=5,
            ckpt_every=0,
            tensorboard=False,
        )
    else:
        # configs/cpu-small.yaml's recipe (Muon, a 4,096-token vocabulary, an untied head, warmup-stable-
        # decay: benchmarks/time_to_quality.py and recipe_levers.py), its schedule over the demo's wall time
        model = ModelConfig(
            family="decoder", vocab_size=4096, d_model=128, n_layers=4, n_heads=4, max_seq_len=128, tie_embeddings=False
        )
        train = TrainConfig(
            batch_size=16,
            lr=3e-3,
            warmup_steps=20,
            optimizer="muon",
            schedule="wsd",
            max_steps=None,
            max_time=train_seconds,
            eval_every=100,
            eval_batches=8,
            log_every=10,
            ckpt_every=200,
        )
    return RunConfig(
        model=model,
        train=train,
        out=str(out / "run"),
        data=DataConfig(paths=data, tokenizer=tokenizer, val_fraction=0.02),
    )


def run_demo(
    out: str | Path = "runs/demo",
    data: list[str] | None = None,
    minutes: float = 3.0,
    quick: bool = False,
    prompt: str | None = None,
) -> dict[str, Any]:
    """Run every step; returns a summary with each artefact's path and the figures seen."""
    from lmkit import plan
    from lmkit.data.curate import curate
    from lmkit.data.read import iter_documents
    from lmkit.infer.sampling import GenerationConfig
    from lmkit.infer.text import generate
    from lmkit.models import checkpoint
    from lmkit.ship.card.render import render_card
    from lmkit.ship.hub import Hub
    from lmkit.ship.quantize import quantize_checkpoint
    from lmkit.tokenizer import train_tokenizer
    from lmkit.train.loop import train

    t_start = time.perf_counter()
    from lmkit.data.read import list_files
    from lmkit.files import check_out_dir

    if data:
        list_files(data)  # a path that is not there is refused before anything is written or printed
    root = _fresh_out(Path(out).expanduser())
    check_out_dir(root, False, list(data or []))  # new or empty by now; never in or around --data
    root.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"out": str(root), "steps": {}}

    def step(title: str) -> None:
        print(f"== {title} " + "=" * max(0, 70 - len(title)), file=sys.stderr, flush=True)  # no blank lines

    step("1/8 gather the corpus")
    if data:
        raw_paths = list(data)
        print(f"using your data: {', '.join(raw_paths)}", file=sys.stderr)
    else:
        found = gather_default_corpus(root / "raw", max_bytes=1_500_000 if quick else 24_000_000)
        raw_paths = [str(root / "raw")]
        for name, info in found.items():
            print(f"  {name:18s} {info['documents']:7,d} documents {_human_bytes(info['bytes']):>10s}", file=sys.stderr)
        summary["corpus"] = found

    step("2/8 curate: normalise, filter, redact PII, deduplicate")
    report = curate(raw_paths, root / "curated", workers=0, progress=True)
    summary["curation"] = report["totals"]
    for w in report["warnings"]:
        print(f"  warning: {w['message']}", file=sys.stderr)
    print(f"  report: {root / 'curated' / 'report.md'}", file=sys.stderr)

    step("3/8 train a byte-level BPE tokenizer")
    vocab = 512 if quick else 4096
    tok = train_tokenizer((d.text for d in iter_documents([root / "curated"])), vocab_size=vocab)
    tok_path = tok.save(root / "tokenizer")
    print(f"  {tok.vocab_size:,} tokens -> {tok_path}", file=sys.stderr)

    run_cfg = demo_run_config(root, [str(root / "curated")], str(tok_path), max(20.0, minutes * 60 * 0.6), quick)
    run_cfg.model.vocab_size = tok.vocab_size
    step("4/8 plan: parameters, memory, compute")
    p = plan.make_plan(cfg=run_cfg.model, seq_len=run_cfg.model.max_seq_len, micro_batch=run_cfg.train.batch_size)
    summary["plan"] = {
        "params": p["params"],
        "chinchilla_tokens_for_this_size": 20 * p["params"],
        "training_bytes": p["memory"]["training_bytes"],
    }
    print(
        f"  {p['params']:,.0f} parameters; Chinchilla-optimal data for this size ~{20 * p['params']:,.0f} tokens; "
        f"training memory ~{_human_bytes(p['memory']['training_bytes'])}",
        file=sys.stderr,
    )

    step("5/8 pre-train a decoder (causal language modeling)")
    result = train(run_cfg)
    ckpt = Path(result["checkpoint"])
    summary["training"] = {
        k: result[k]
        for k in ("steps", "tokens", "params", "train_loss", "eval", "wall_time_s", "loss_curve", "checkpoint")
    }

    step("6/8 generate")
    model = checkpoint.load_model(ckpt)
    tokenizer = checkpoint.load_tokenizer(ckpt)
    prompt = prompt or ("Permission is hereby granted" if not data else "The")
    greedy = generate(model, tokenizer, prompt, GenerationConfig(max_new_tokens=40))
    sampled = generate(
        model,
        tokenizer,
        prompt,
        GenerationConfig(max_new_tokens=40, do_sample=True, temperature=0.8, top_p=0.95, seed=0),
    )
    summary["generation"] = {"prompt": prompt, "greedy": greedy.text, "sampled (T=0.8, top-p 0.95)": sampled.text}
    print(f"  {prompt!r} completed greedily and by sampling (in the summary below)", file=sys.stderr)

    step("7/8 quantize to int8")
    # scored on the windows of the run's last evaluation (its batch size and number of batches), so
    # the model's held-out figures and the int8 copy's are of the same held-out tokens
    q = quantize_checkpoint(
        ckpt,
        root / "model-int8",
        to="int8",
        show_progress=False,
        batch_size=run_cfg.train.micro_batch_size or run_cfg.train.batch_size,
        eval_batches=run_cfg.train.eval_batches,
    )
    summary["quantization"] = q
    print(f"  -> {root / 'model-int8'}", file=sys.stderr)

    step("8/8 model card and local hub")
    card = render_card(ckpt)
    (ckpt / "README.md").write_text(card, encoding="utf-8")
    hub_dir = root / "hub"
    manifest = Hub(str(hub_dir)).push(ckpt, "demo/lmkit-demo-decoder")
    summary["card"] = str(ckpt / "README.md")
    summary["hub"] = {"url": str(hub_dir), "name": "demo/lmkit-demo-decoder", "revision": manifest.get("revision")}
    print(
        f"  card -> {ckpt / 'README.md'}; hub -> {hub_dir} (demo/lmkit-demo-decoder, revision "
        f"{manifest.get('revision')})",
        file=sys.stderr,
    )
    summary["wall_time_s"] = time.perf_counter() - t_start
    return summary
