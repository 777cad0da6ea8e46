"""Importing by hub name: a huggingface_hub cache laid out by the test, read offline (HF_HUB_OFFLINE=1);
the base model's name, commit and license recorded, and carried on to every checkpoint derived from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmkit.config import load_run_config
from lmkit.models.checkpoint import load_meta, load_model
from lmkit.ship.card.render import render_card
from lmkit.ship.hf_source import BaseModel, looks_like_repo_id
from lmkit.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"
TEXT = ["the licensee shall keep the notice. the licensor grants a license to copy it."] * 40


def _snapshot(cache: Path, repo: str, commit: str, vocab: int | None = None, seed: int = 0) -> Path:
    """One snapshot of ``repo`` in a hub cache, as huggingface_hub lays it out (refs/, snapshots/)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(TEXT, vocab_size=400, show_progress=False)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab or tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    LlamaForCausalLM(cfg).save_pretrained(snap)
    tok.save(snap / "tokenizer.json")
    (snap / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# tiny\n", encoding="utf-8")
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    if commit == COMMIT:
        (repo_dir / "refs" / "main").write_text(commit, encoding="utf-8")
    return snap


def _lmkit(args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home")}
    return subprocess.run(
        [sys.executable, "-m", "lmkit.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("hub") / "cache"
    _snapshot(cache, "alice/tiny-llama", COMMIT)
    _snapshot(cache, "alice/tiny-llama", OLD, seed=1)
    return cache


@pytest.mark.slow
def test_import_by_hub_name_offline_records_the_base_model(hub_cache: Path, tmp_path: Path) -> None:
    r = _lmkit(["import-hf", "alice/tiny-llama", "--out", "m", "--json"], hub_cache, tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["base_model"] == {"name": "alice/tiny-llama", "revision": COMMIT, "license": "apache-2.0", "hub": True}
    meta = load_meta(tmp_path / "m")
    assert meta["imported_from"]["hub_name"] == "alice/tiny-llama" and meta["imported_from"]["revision"] == COMMIT
    # the weights are the snapshot's: same logits as transformers on the cached folder
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(hub_cache / "models--alice--tiny-llama" / "snapshots" / COMMIT).eval()
    ids = torch.tensor([[5, 17, 40, 3, 99]])
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "m")(ids), hf(ids).logits, rtol=1e-5, atol=1e-5)
    card = render_card(tmp_path / "m")
    assert "license: apache-2.0" in card and "base_model: alice/tiny-llama" in card
    assert f"`alice/tiny-llama` at revision `{COMMIT}` on the hub" in card


@pytest.mark.slow
def test_revision_picks_another_commit(hub_cache: Path, tmp_path: Path) -> None:
    r = _lmkit(["import-hf", "alice/tiny-llama", "--revision", OLD, "--out", "old", "--json"], hub_cache, tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["base_model"]["revision"] == OLD
    main = _lmkit(["import-hf", "alice/tiny-llama", "--out", "new", "--json"], hub_cache, tmp_path)
    assert main.returncode == 0, main.stderr
    a, b = load_model(tmp_path / "old"), load_model(tmp_path / "new")
    assert not torch.equal(a.tok_emb.weight, b.tok_emb.weight)  # two different snapshots


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bob/absent"], "bob/absent: no such folder here, and not in the hub cache while offline"),
        (["alice/tiny-llama", "--revision", "nope"], "alice/tiny-llama@nope: "),
        (["not a name!"], "not a name!: no such folder, and not a hub model name (owner/name)"),
        ([".", "--revision", "main"], "--revision main: . is a local folder"),
    ],
)
def test_unknown_names_end_in_one_line(hub_cache: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    r = _lmkit(["import-hf", *args, "--out", "x"], hub_cache, tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_taken_out_folder_is_refused_before_any_download(hub_cache: Path, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("mine", encoding="utf-8")
    r = _lmkit(["import-hf", "carol/never-fetched", "--out", "x"], hub_cache, tmp_path)
    assert r.returncode != 0 and "x" in r.stderr and "cache" not in r.stderr
    assert (tmp_path / "x" / "mine.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.slow
def test_continued_pretraining_carries_the_base_model_on(hub_cache: Path, tmp_path: Path) -> None:
    from lmkit.ship.quantize import quantize_checkpoint
    from lmkit.train.loop import train

    assert _lmkit(["import-hf", "alice/tiny-llama", "--out", "m"], hub_cache, tmp_path).returncode == 0
    corpus = tmp_path / "legal.txt"
    corpus.write_text("\n\n".join(TEXT * 3), encoding="utf-8")
    cfg = load_run_config(
        ROOT / "configs" / "tiny.yaml",
        {
            "data.paths": [str(corpus)],
            "out": str(tmp_path / "run"),
            "train.init": str(tmp_path / "m"),
            "train.max_steps": 2,
            "train.eval_every": 0,
            "train.batch_size": 2,
        },
    )
    run = train(cfg, show_progress=False)
    base = BaseModel.from_meta(load_meta(run["checkpoint"]))
    assert base is not None and (base.name, base.revision, base.license) == ("alice/tiny-llama", COMMIT, "apache-2.0")
    card = render_card(run["checkpoint"])
    assert "license: apache-2.0" in card and "continued pre-training of the foundation model `alice/tiny-llama`" in card
    quantize_checkpoint(run["checkpoint"], tmp_path / "q")
    assert BaseModel.from_meta(load_meta(tmp_path / "q")) == base


def test_repo_id_spelling() -> None:
    assert looks_like_repo_id("HuggingFaceTB/SmolLM2-135M") and looks_like_repo_id("gpt2")
    for bad in ("a/b/c", "../x", "a b", "/abs", "x/", "a/..", ""):
        assert not looks_like_repo_id(bad), bad
