"""The encoder family: BERT/RoFormer parity, padding, masked-LM pre-training, fill-mask, families table."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmkit.cli import main
from lmkit.config import ModelConfig, load_run_config
from lmkit.data.shards import TokenShards
from lmkit.errors import LmkitError
from lmkit.infer.fillmask import fill_mask
from lmkit.models import build_model, count_parameters
from lmkit.models import encoder as E
from lmkit.models.checkpoint import load_model, load_tokenizer, save_checkpoint
from lmkit.ship.export_hf import to_hf_state
from lmkit.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def grammar_corpus(folder: Path, n_docs: int = 300, seed: int = 0) -> Path:
    """Sentences from a small grammar: "old" is always followed by "man", "red" by "ball"."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the farmer"]
    verbs = ["sees", "likes", "finds", "feeds", "calls"]
    objects = ["the bird", "a red ball", "the river", "his friend", "the small house"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_docs):
        sents = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(6)]
        lines.append(json.dumps({"id": f"doc{i}", "text": " ".join(sents)}))
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def unigram_entropy(shards: TokenShards) -> float:
    tokens = np.concatenate([np.asarray(a) for a in shards._arrays])
    counts = np.bincount(tokens).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def hf_copy(cfg: ModelConfig, model: torch.nn.Module) -> torch.nn.Module:
    """The matching transformers model holding the same weights."""
    import transformers

    hf_cfg = E.hf_config(cfg)
    arch = hf_cfg.pop("architectures")[0]
    hf_cfg.pop("model_type")
    config_cls = transformers.BertConfig if arch == "BertForMaskedLM" else transformers.RoFormerConfig
    hf = getattr(transformers, arch)(config_cls(**hf_cfg)).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state(model, cfg), strict=False)
    assert not unexpected
    # only tied copies and RoFormer's fixed sinusoid table are not in the map
    assert set(missing) <= {
        "cls.predictions.decoder.weight",
        "cls.predictions.decoder.bias",
        "roformer.encoder.embed_positions.weight",
    }, missing
    return hf


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_logits_match_transformers_with_padding(pos: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        family="encoder",
        vocab_size=300,
        d_model=32,
        n_layers=2,
        n_heads=4,
        max_seq_len=40,
        pos_encoding=pos,
        norm_eps=1e-12,
    )
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-trivial values everywhere (biases, norms, MLM bias start at 0/1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    names = E.hf_name_map(cfg)
    assert set(names) == {n for n, _ in model.named_parameters()}  # every parameter has its place
    hf = hf_copy(cfg, model)
    ids = torch.randint(0, 300, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, 29:] = 0
    types = torch.zeros(2, 40, dtype=torch.long)
    types[:, 20:] = 1
    with torch.no_grad():
        ours = model(ids, mask, types)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert torch.allclose(ours[0], theirs[0], atol=1e-4)
    assert torch.allclose(ours[1, :29], theirs[1, :29], atol=1e-4)  # padded positions are not compared
    assert count_parameters(model) == sum(p.numel() for p in hf.parameters()) - (
        cfg.max_seq_len * cfg.head_dim if pos == "rotary" else 0
    )  # RoFormer's sinusoid table is a frozen parameter


def test_padding_does_not_change_real_tokens_and_loss_scores_only_chosen_positions() -> None:
    torch.manual_seed(1)
    cfg = ModelConfig(
        family="encoder", vocab_size=200, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, pos_encoding="learned"
    )
    model = build_model(cfg).eval()
    ids = torch.randint(105, 200, (1, 20))
    padded = torch.cat([ids, torch.zeros(1, 12, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 20), torch.zeros(1, 12)], dim=1).long()
    with torch.no_grad():
        assert torch.allclose(model(ids)[0], model(padded, mask)[0, :20], atol=1e-5)
    labels = torch.full((2, 32), -100)
    labels[0, 3], labels[1, 7], labels[1, 30] = 150, 160, 170
    batch = {"input_ids": torch.randint(105, 200, (2, 32)), "labels": labels}
    logits = model(batch["input_ids"])
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(model.loss(batch), expected, atol=1e-5)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("encoder")
    data = grammar_corpus(tmp / "data")
    cfg = load_run_config(ROOT / "configs" / "tiny-encoder.yaml", {"data.paths": [str(data)], "out": str(tmp / "run")})
    summary = train(cfg, show_progress=False)
    return {
        "summary": summary,
        "run": tmp / "run",
        "entropy": unigram_entropy(TokenShards(tmp / "run" / "shards" / "train")),
    }


@pytest.mark.slow
def test_masked_lm_pretraining_beats_the_unigram_entropy(pretrained: dict) -> None:
    s = pretrained["summary"]
    assert s["eval"]["loss"] < 0.6 * pretrained["entropy"], (s["eval"], pretrained["entropy"])
    meta = json.loads((Path(s["checkpoint"]) / "meta.json").read_text())
    assert meta["family"] == "encoder" and meta["objective"] == "mlm"


@pytest.mark.slow
def test_fill_mask_recovers_determined_words(pretrained: dict) -> None:
    ckpt = pretrained["summary"]["checkpoint"]
    model, tok = load_model(ckpt), load_tokenizer(ckpt)
    res = fill_mask(model, tok, "the old [MASK] feeds the bird.", top_k=3)
    assert res.masks[0].candidates[0].token == " man"
    assert res.masks[0].candidates[0].probability > 0.5
    assert res.filled == "the old man feeds the bird."
    two = fill_mask(model, tok, "the old [MASK] finds a red [MASK].")
    assert [m.candidates[0].token for m in two.masks] == [" man", " ball"]
    assert all(len(m.candidates) == 5 for m in two.masks)
    probs = [c.probability for c in two.masks[0].candidates]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6


@pytest.mark.slow
def test_fill_mask_command(pretrained: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ckpt = pretrained["summary"]["checkpoint"]
    assert main(["fill-mask", ckpt, "the old [MASK] sees his friend.", "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["masks"][0]["candidates"][0]["token"] == " man" and len(out["masks"][0]["candidates"]) == 2
    assert main(["fill-mask", ckpt, "the old [MASK] sees his friend."]) == 0
    text = capsys.readouterr().out
    assert "' man'" in text and "filled: the old man sees his friend." in text
    assert main(["fill-mask", ckpt, "no mask here"]) == 2
    assert "has no [MASK]" in capsys.readouterr().err
    # a decoder checkpoint is pointed to `lmkit generate`
    dec_cfg = ModelConfig(
        family="decoder", vocab_size=load_tokenizer(ckpt).vocab_size, d_model=32, n_layers=1, n_heads=2, max_seq_len=16
    )
    save_checkpoint(tmp_path / "dec", build_model(dec_cfg), dec_cfg, tokenizer=load_tokenizer(ckpt))
    assert main(["fill-mask", str(tmp_path / "dec"), "a [MASK]"]) == 2
    assert "use `lmkit generate`" in capsys.readouterr().err


@pytest.mark.slow
def test_fill_mask_refuses_too_long_text(pretrained: dict) -> None:
    ckpt = pretrained["summary"]["checkpoint"]
    with pytest.raises(LmkitError, match="context window"):
        fill_mask(load_model(ckpt), load_tokenizer(ckpt), "the cat sees the bird. " * 40 + "[MASK]")


def test_families_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    for word in (
        "model.family: encoder",
        "model.family: decoder",
        "model.family: encdec",
        "bidirectional",
        "masked language modeling",
        "span corruption",
        "BERT",
        "GPT",
        "T5",
        "How to choose",
    ):
        assert word in out
    assert main(["families", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["encoder", "decoder", "encdec"]
    assert all(r["objective"] and r["context"] and r["tasks"] and r["models"] for r in rows)
