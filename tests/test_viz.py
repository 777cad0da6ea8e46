"""viz: the captured attention maps are the model's real ones; embedding projections and cosines are right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.infer.viz import (
    attention_maps,
    capture_attention,
    embedding_projection,
    head_summary,
    plot_attention,
    plot_embeddings,
)
from lmkit.models import build_model
from lmkit.models import encdec as ED
from lmkit.models import encoder as E
from lmkit.models.checkpoint import save_checkpoint
from lmkit.ship.export_hf import to_hf_state
from lmkit.tokenizer import Tokenizer, train_tokenizer

TEXT = "the cat sees the bird and the dog likes a red ball."

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = ["the cat sees the bird. a dog likes a red ball. the king and the queen, a man and a woman."] * 50
    return train_tokenizer(texts, vocab_size=400, show_progress=False)


def model_of(family: str, vocab: int, seed: int = 0, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    args: dict[str, object] = {
        "family": family,
        "vocab_size": vocab,
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 4,
        "max_seq_len": 32,
        "max_target_len": 8,
    }
    args.update(kw)
    model = build_model(ModelConfig(**args)).eval()  # type: ignore[arg-type]
    with torch.no_grad():  # sharper attention than at initialisation, so the comparison means something
        for name, p in model.named_parameters():
            if "q_proj" in name or "k_proj" in name:
                p.mul_(8.0)
    return model


def test_encoder_maps_equal_berts_own_attention_weights(tok: Tokenizer) -> None:
    from transformers import BertConfig, BertForMaskedLM

    model = model_of("encoder", tok.vocab_size, pos_encoding="learned")
    cfg = E.hf_config(model.cfg)
    cfg.pop("architectures"), cfg.pop("model_type")
    hf = BertForMaskedLM(BertConfig(**cfg, attn_implementation="eager")).eval()
    hf.load_state_dict(to_hf_state(model, model.cfg), strict=False)
    ids = torch.tensor([tok.encode(TEXT)])
    ours, _ = capture_attention(model, ids)
    theirs = torch.stack([a[0] for a in hf(input_ids=ids, output_attentions=True).attentions])
    assert ours.shape == (2, 4, ids.shape[1], ids.shape[1])
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert ours.max() > 0.3  # not uniform


def test_encdec_maps_equal_t5s_encoder_attention(tok: Tokenizer) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    model = model_of("encdec", tok.vocab_size, seed=1)
    cfg = ED.hf_config(model.cfg)
    cfg.pop("architectures"), cfg.pop("model_type")
    hf = T5ForConditionalGeneration(T5Config(**cfg, attn_implementation="eager")).eval()
    state = model.state_dict()
    hf.load_state_dict({t: state[o] for o, t in ED.hf_name_map(model.cfg).items()}, strict=False)
    maps = attention_maps(model, tok, TEXT)
    ids = torch.tensor([tok.encode(TEXT) + [tok.eos_id]])
    out = hf(input_ids=ids, decoder_input_ids=torch.zeros(1, 1, dtype=torch.long), output_attentions=True)
    assert torch.allclose(maps.weights, torch.stack([a[0] for a in out.encoder_attentions]), atol=1e-5)
    assert maps.tokens[-1] == "</s>" and "encoder" in maps.stack


def test_decoder_maps_are_causal_and_rows_sum_to_one(tok: Tokenizer) -> None:
    model = model_of("decoder", tok.vocab_size, seed=2)
    maps = attention_maps(model, tok, TEXT)
    w = maps.weights
    T = len(maps.tokens)
    # the ids the model reads elsewhere: lmkit's own tokenizer adds no BOS (documents sit between EOS)
    assert maps.tokens == [tok.token_str(i) for i in tok.prompt_ids(TEXT)] and maps.tokens[0] != "<s>"
    assert w.shape == (2, 4, T, T)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, T), atol=1e-5)
    assert (w.triu(diagonal=1) == 0).all()  # nothing attends to a later token
    summary = head_summary(maps)
    assert len(summary) == 8
    assert all(s["first"] >= 1 / T - 1e-6 for s in summary)  # position 0 always gets its row-0 weight of 1
    assert all(s["mostly"] in ("self", "previous", "next", "first", "spread") for s in summary)


def test_attention_png_and_no_silent_overwrite(tok: Tokenizer, tmp_path: Path) -> None:
    maps = attention_maps(model_of("encoder", tok.vocab_size, seed=3), tok, TEXT)
    png = plot_attention(maps, tmp_path / "maps.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    with pytest.raises(LmkitError, match="already exists"):
        plot_attention(maps, png)
    plot_attention(maps, png, overwrite=True, layers=[1], heads=[0, 3])
    with pytest.raises(LmkitError, match="no head 4"):
        plot_attention(maps, tmp_path / "x.png", heads=[4])
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_embedding_projection_and_cosines(tok: Tokenizer, tmp_path: Path) -> None:
    model = model_of("encoder", tok.vocab_size, seed=4)
    table = model.tok_emb.weight.detach()
    proj = embedding_projection(model, tok, ["cat", "dog", "bird"], dims=2)
    vecs = torch.stack([table[tok.encode(" " + w)].mean(0) for w in ("cat", "dog", "bird")])
    assert torch.allclose(proj.vectors, vecs)
    unit = vecs / vecs.norm(dim=1, keepdim=True)
    assert torch.allclose(proj.cosine, unit @ unit.T, atol=1e-6)
    assert torch.allclose(proj.angles[0, 1], torch.rad2deg(torch.arccos(proj.cosine[0, 1])))
    # three points span a plane: the 2-D projection keeps every pairwise distance
    assert torch.allclose(torch.cdist(proj.coords, proj.coords), torch.cdist(vecs, vecs), atol=1e-4)
    assert sum(proj.explained) == pytest.approx(1.0, abs=1e-5)
    p3 = embedding_projection(model, tok, ["cat", "dog", "bird", "king", "queen"], dims=3)
    assert p3.coords.shape == (5, 3) and p3.explained == sorted(p3.explained, reverse=True)
    png = plot_embeddings(p3, tmp_path / "emb.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(LmkitError, match="at least two words"):
        embedding_projection(model, tok, ["cat"])


def test_viz_commands(tok: Tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = model_of("encdec", tok.vocab_size, seed=5)
    save_checkpoint(tmp_path / "ckpt", model, model.cfg, tokenizer=tok)
    ck = str(tmp_path / "ckpt")
    assert main(["viz", "attention", ck, "the cat sees the bird.", "--out", str(tmp_path / "a.png"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert Path(rep["png"]).is_file() and len(rep["heads"]) == 8 and rep["tokens"][-1] == "</s>"
    assert main(["viz", "attention", ck, "the cat", "--out", str(tmp_path / "a.png")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "viz",
                "embeddings",
                ck,
                "--words",
                "king",
                "queen",
                "man",
                "woman",
                "--out",
                str(tmp_path / "e.png"),
                "--dims",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "cosine" in out and "°" in out and "king" in out and (tmp_path / "e.png").is_file()
