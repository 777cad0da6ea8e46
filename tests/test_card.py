"""Model cards: the real figures of a trained checkpoint, front matter that parses, "not recorded"
instead of invented numbers, the family's task, the user's sections, and a CLI that never
overwrites a card silently."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig, load_run_config
from lmkit.errors import LmkitError
from lmkit.models import build_model
from lmkit.models.checkpoint import load_meta, save_checkpoint
from lmkit.plan import pf_days
from lmkit.ship.card.render import parse_front_matter, render_card

ROOT = Path(__file__).resolve().parents[1]


def corpus(folder: Path, n_docs: int = 120) -> Path:
    rng = random.Random(0)
    words = ["the cat", "a dog", "my sister", "the farmer", "sees", "likes", "feeds", "the bird", "a ball"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(words) for _ in range(30)) + "."}) for i in range(n_docs)
    ]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "corpus.jsonl"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoder really trained for a few steps by lmkit.train.loop (its meta.json is the trainer's)."""
    from lmkit.train.loop import train

    tmp = tmp_path_factory.mktemp("card")
    cfg = load_run_config(
        ROOT / "configs" / "tiny.yaml",
        {
            "data.paths": [str(corpus(tmp / "data"))],
            "out": str(tmp / "run"),
            "data.vocab_size": 400,
            "model.d_model": 32,
            "model.max_seq_len": 32,
            "train.max_steps": 4,
            "train.eval_every": 0,
            "train.ckpt_every": 0,
            "train.eval_batches": 1,
            "train.precision": "fp32",
        },
    )  # the card quotes it
    return Path(train(cfg, show_progress=False)["checkpoint"])


def hand_made(path: Path, family: str = "decoder", meta: dict | None = None, **cfg_kw: object) -> Path:
    kw: dict = {"pos_encoding": "learned" if family == "encoder" else "rotary", **cfg_kw}
    cfg = ModelConfig(family=family, vocab_size=400, d_model=32, n_layers=1, n_heads=4, max_seq_len=32, **kw)  # type: ignore[arg-type]
    torch.manual_seed(0)
    return save_checkpoint(path, build_model(cfg), cfg, meta=meta or {})


def test_card_of_a_trained_checkpoint_has_its_real_figures(trained: Path) -> None:
    meta = load_meta(trained)
    text = render_card(trained, license="apache-2.0", language=["en"])
    fm, body = parse_front_matter(text)
    assert fm["license"] == "apache-2.0" and fm["language"] == ["en"] and fm["library_name"] == "lmkit"
    assert fm["pipeline_tag"] == "text-generation" and "decoder" in fm["tags"]
    assert fm["datasets"] == ["corpus.jsonl"]  # the training input, by name
    assert set(fm["metrics"]) == {"loss", "perplexity", "bits-per-byte"}
    results = {m["type"]: m["value"] for m in fm["model-index"][0]["results"][0]["metrics"]}
    assert results["loss"] == pytest.approx(meta["eval"]["loss"], abs=1e-6)
    assert results["bits-per-byte"] == pytest.approx(meta["eval"]["bits_per_byte"], abs=1e-6)
    # the figures of the run, as the trainer recorded them
    assert f"tokens seen: {meta['tokens']:,}" in body
    assert f"optimizer steps: {meta['step']}" in body
    assert f"{meta['flops']:.3g} FLOPs = {pf_days(meta['flops']):.3g} petaFLOP/s-days" in body
    assert f"| loss (nats per token) | {meta['eval']['loss']:.4f} |" in body
    assert f"{meta['params']:,}" in body
    assert f"{meta['data']['train_tokens']:,} training tokens" in body
    assert "precision: fp32" in body and "threads" in body and "wall time: " in body
    for section in (
        "## Model",
        "## Intended uses",
        "## Training",
        "## Evaluation",
        "## Limitations and risks",
        "## How to use",
        "### With lmkit",
        "### With transformers",
    ):
        assert section in body
    assert "AutoModelForCausalLM" in body and "No alignment" in body
    assert not re.search(r"\bNone\b|\bnan\b|TODO|XXX", text)


def test_missing_figures_say_not_recorded(tmp_path: Path) -> None:
    ckpt = hand_made(tmp_path / "bare")
    text = render_card(ckpt)
    fm, body = parse_front_matter(text)
    assert fm["license"] == "unknown" and "metrics" not in fm and "model-index" not in fm
    for line in (
        "tokens seen: not recorded",
        "compute: not recorded",
        "wall time: not recorded",
        "hardware: not recorded",
        "Held-out loss, perplexity and bits per byte: not recorded",
    ):
        assert line in body, line
    assert not re.search(r"\bNone\b|\bnan\b", text)


@pytest.mark.parametrize(
    "family,tag,auto",
    [("encoder", "fill-mask", "AutoModelForMaskedLM"), ("encdec", "text2text-generation", "AutoModelForSeq2SeqLM")],
)
def test_pipeline_tag_and_uses_follow_the_family(tmp_path: Path, family: str, tag: str, auto: str) -> None:
    text = render_card(hand_made(tmp_path / family, family))
    fm, body = parse_front_matter(text)
    assert fm["pipeline_tag"] == tag and auto in body
    assert ("fill-mask" in body) if family == "encoder" else ("<extra_id_0>" in body)


def test_unexportable_model_says_so(tmp_path: Path) -> None:
    body = render_card(hand_made(tmp_path / "learned", pos_encoding="learned"))
    assert "Not loadable in transformers: no transformers class has this decoder's layout" in body
    assert "GPT2LMHeadModel needs model.norm layer, got 'rms'" in body  # the nearest class says what differs
    assert "lmkit export" not in body


def test_mix_curation_and_quantization_figures(tmp_path: Path) -> None:
    meta = {
        "step": 10,
        "tokens": 10_000,
        "flops": 8.64e15,
        "params": 50_000,
        "eval": {"loss": 2.0, "perplexity": 7.389, "bits_per_byte": 1.5},
        "data": {
            "paths": ["legal/", "web/"],
            "sources": {"legal": 5100, "web": 4900},
            "train_tokens": 10_000,
            "curation": {
                "totals": {"docs_in": 200, "docs_out": 150, "docs_kept_pct": 75.0, "tokens_kept_pct": 70.0},
                "stages": [{"name": "gopher_quality", "docs_in": 200, "docs_out": 160, "docs_kept_pct": 80.0}],
            },
        },
        "quantization": {
            "to": "int8",
            "method": "int8-absmax-per-channel",
            "disk_bytes": {"before": 400_000, "after": 100_000, "ratio": 4.0},
            "eval_before": {"loss": 2.0, "perplexity": 7.389},
            "eval_after": {"loss": 2.05, "perplexity": 7.768},
        },
    }
    fm, body = parse_front_matter(render_card(hand_made(tmp_path / "q", meta=meta)))
    assert fm["datasets"] == ["legal", "web"]
    assert "legal: 5,100 (51.0%)" in body and "web: 4,900 (49.0%)" in body
    assert "200 documents in, 150 kept (75.0%)" in body and "gopher_quality: 200 -> 160" in body
    assert "8.64e+15 FLOPs = 0.0001 petaFLOP/s-days" in body  # 1 PF-day = 8.64e19 FLOPs
    assert "| loss | 2.0000 | 2.0500 | +0.05 (+2.5%) |" in body
    assert "size on disk: 400 kB -> 100 kB (4.00x smaller)" in body
    assert "1 pass over the training data" in body and "0.2 tokens per parameter" in body


def test_imported_model_card_does_not_invent_a_training_record(tmp_path: Path) -> None:
    meta = {
        "family": "decoder",
        "params": 1234,
        "imported_from": {"path": "/models/x", "architecture": "LlamaForCausalLM"},
    }
    body = render_card(hand_made(tmp_path / "imp", meta=meta))
    assert "trained outside lmkit" in body and "not recorded by lmkit" in body


def test_cli_card_writes_appends_sections_and_refuses_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = hand_made(tmp_path / "ck", meta={"tokens": 5, "step": 1})
    extra = tmp_path / "ethics.md"
    extra.write_text("Use this model only for teaching.\n")
    titled = tmp_path / "t.md"
    titled.write_text("## Acknowledgements\n\nThanks.\n")
    assert main(["card", str(ckpt), "--add-section", str(extra), str(titled), "--license", "mit"]) == 0
    text = (ckpt / "README.md").read_text()
    assert parse_front_matter(text)[0]["license"] == "mit"
    assert "## Ethics\n\nUse this model only for teaching." in text
    assert text.rstrip().endswith("## Acknowledgements\n\nThanks.")
    assert main(["card", str(ckpt)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["card", str(ckpt), "--out", "-"]) == 0
    assert capsys.readouterr().out.startswith("---\n")
    with pytest.raises(LmkitError, match="not found"):
        render_card(ckpt, sections=[tmp_path / "missing.md"])


def test_curation_survival_as_the_trainer_records_it(tmp_path: Path) -> None:
    """`lmkit curate`'s report, summarised by the trainer into meta.json, reaches the card."""
    from lmkit.data.curate import curate
    from lmkit.train.record import curation_summary

    src = corpus(tmp_path / "raw")
    report = curate([src], tmp_path / "curated", workers=1, progress=False)
    t = report["totals"]
    one = {"data": {"paths": [str(tmp_path / "curated")], "curation": curation_summary([str(tmp_path / "curated")])}}
    body = parse_front_matter(render_card(hand_made(tmp_path / "one", meta=one)))[1]
    line = (
        f"- curation: {t['docs_in']:,} documents in, {t['docs_out']:,} kept ({t['docs_kept_pct']:.1f}%); "
        f"{t['tokens_kept_pct']:.1f}% of tokens kept"
    )
    assert line in body and "curation survival: not recorded" not in body
    two = {"data": {"curation": {"web/": t, "legal/": {"totals": t, "stages": report["stages"]}}}}
    body = parse_front_matter(render_card(hand_made(tmp_path / "two", meta=two)))[1]
    assert f"- curation of web/: {t['docs_in']:,} documents in" in body
    assert f"- curation of legal/: {t['docs_in']:,} documents in" in body
    first = report["stages"][0]
    assert f"  - {first['name']}: {first['docs_in']:,} -> {first['docs_out']:,} documents" in body


def test_card_parses_as_a_hub_model_card_and_renders(trained: Path) -> None:
    """huggingface_hub reads the front matter (metadata and eval results); the Markdown renders to HTML."""
    hub = pytest.importorskip("huggingface_hub")
    markdown_it = pytest.importorskip("markdown_it")
    meta = load_meta(trained)
    text = render_card(trained, license="apache-2.0", language=["en"])
    card = hub.ModelCard(text)
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "text-generation"
    assert card.data.datasets == ["corpus.jsonl"] and card.data.library_name == "lmkit"
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["loss"] == pytest.approx(meta["eval"]["loss"], abs=1e-6)
    assert results["perplexity"] == pytest.approx(meta["eval"]["perplexity"], abs=1e-5)
    assert card.text.lstrip().startswith("# ")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(card.text)
    assert html.count("<h2>") >= 5 and "<table>" in html and "<pre><code" in html
    assert f"{meta['tokens']:,}" in html and f"{meta['eval']['loss']:.4f}" in html


def test_rotary_encoder_card_names_roformer(tmp_path: Path) -> None:
    fm, body = parse_front_matter(render_card(hand_made(tmp_path / "rot", "encoder", pos_encoding="rotary")))
    assert "roformer" in fm["tags"] and "| transformers class | `RoFormerForMaskedLM` |" in body
    assert "lmkit export" in body and "AutoModelForMaskedLM" in body
    fm, body = parse_front_matter(render_card(hand_made(tmp_path / "sin", "encoder", pos_encoding="sinusoidal")))
    assert "bert" not in fm["tags"] and "Not loadable in transformers: an encoder with sinusoidal positions" in body


@pytest.mark.parametrize(
    ("kw", "ffn", "norm"),
    [
        ({}, "ReLU", "RMSNorm, pre-norm"),  # T5 v1.0, lmkit's own encoder-decoder
        ({"mlp": "gated", "activation": "gelu_tanh"}, "GeGLU (tanh)", "RMSNorm, pre-norm"),  # Flan-T5
    ],
)
def test_encoder_decoder_card_describes_its_own_layout(tmp_path: Path, kw: dict, ffn: str, norm: str) -> None:
    body = render_card(hand_made(tmp_path / "ed", family="encdec", pos_encoding="rotary", **kw))
    assert f"| feed-forward | {ffn}, width" in body and f"| normalisation | {norm}, eps" in body
    assert "T5 relative position buckets" in body
