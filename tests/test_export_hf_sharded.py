"""Sharded Hugging Face export: above ``--max-shard-size`` the weights are transformers' shards of whole
tensors with ``model.safetensors.index.json``; transformers loads them with the logits of the single-file
export, ``lmkit import-hf`` gives back the same weights and the training record, and ``--overwrite``
between the two layouts leaves no stale weight file."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # transformers reads local folders only
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from lmkit.cli import main  # noqa: E402
from lmkit.config import ModelConfig  # noqa: E402
from lmkit.errors import LmkitError  # noqa: E402
from lmkit.models import build_model  # noqa: E402
from lmkit.models.checkpoint import load_meta, load_state, save_checkpoint  # noqa: E402
from lmkit.models.hf import target_of  # noqa: E402
from lmkit.ship.export_hf import export_hf, shard_size_bytes  # noqa: E402
from lmkit.ship.import_hf import import_hf  # noqa: E402
from lmkit.tokenizer import Tokenizer, train_tokenizer  # noqa: E402

transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("one_thread")

SHARD = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")
LIMIT = 20_000  # bytes: the tiny models below (~150 KB of float32) become several shards


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = ["the cat sat on the mat and the dog sat on the log. ", "a quick brown fox jumps over the lazy dog."] * 20
    return train_tokenizer(texts, vocab_size=400, min_frequency=1, show_progress=False)


def make_ckpt(path: Path, tok: Tokenizer, family: str = "decoder", tie: bool = False) -> Path:
    cfg = ModelConfig(
        family=family, vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, tie_embeddings=tie
    )  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # non-trivial norms, so a misplaced tensor would show
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    meta = {"step": 7, "tokens": 700, "flops": 1e9, "family": family, "eval": {"loss": 3.5}}
    return save_checkpoint(path, model, cfg, tokenizer=tok, meta=meta)


def weight_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".safetensors") or p.name.endswith(".index.json"))


def hf_model(folder: Path, ckpt: Path) -> torch.nn.Module:
    from lmkit.models.checkpoint import read_config

    auto = target_of(ModelConfig(**read_config(ckpt)["model"])).auto_class
    model, info = getattr(transformers, auto).from_pretrained(
        str(folder), local_files_only=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def logits(model: torch.nn.Module, family: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(5, 290, (2, 16), generator=g)
    with torch.no_grad():
        if family == "encdec":
            return model(input_ids=x, decoder_input_ids=x[:, :7]).logits
        return model(input_ids=x).logits


def test_shard_size_reads_units_and_refuses_bad_values_in_one_line(
    tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shard_size_bytes("5GB") == 5_000_000_000  # decimal, as transformers reads "5GB"
    assert shard_size_bytes("200MB") == 200_000_000
    assert shard_size_bytes("2GiB") == 2 * 1024**3
    assert shard_size_bytes("1.5kb") == 1500
    assert shard_size_bytes("123456") == shard_size_bytes(123456) == 123456
    for bad in ("5 gigabytes", "-1", "0", "GB", "1e9", ""):
        with pytest.raises(LmkitError, match="--max-shard-size"):
            shard_size_bytes(bad)
    ckpt = make_ckpt(tmp_path / "ckpt", tok)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "hf"), "--max-shard-size", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-shard-size" in err and "'lots'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "hf").exists()  # refused before any work


@pytest.mark.parametrize("family,tie", [("decoder", False), ("encdec", True)])
def test_sharded_export_loads_in_transformers_like_the_single_file(
    tmp_path: Path, tok: Tokenizer, family: str, tie: bool
) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tok, family, tie)
    export_hf(ckpt, tmp_path / "one", verify=False)
    report = export_hf(ckpt, tmp_path / "sharded", max_shard_size=LIMIT)  # verified: parity checked on the shards
    assert report["parity"]["ok"]
    one, out = tmp_path / "one", tmp_path / "sharded"
    assert weight_files(one) == ["model.safetensors"]
    shards = [n for n in weight_files(out) if SHARD.fullmatch(n)]
    n = len(shards)
    assert n >= 3 and weight_files(out) == [*shards, "model.safetensors.index.json"]
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)] == report["weight_files"]

    whole = load_file(str(one / "model.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(whole)  # every tensor in exactly one shard
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in whole.values())
    order = []
    for name in shards:
        part = load_file(str(out / name))
        assert all(index["weight_map"][k] == name for k in part)
        size = sum(t.numel() * t.element_size() for t in part.values())
        assert size <= LIMIT or len(part) == 1  # only a tensor larger than the limit stands alone
        for k, t in part.items():
            assert torch.equal(t, whole[k]), k
        order += list(part)
    assert sorted(order) == sorted(whole)
    again = export_hf(ckpt, tmp_path / "again", max_shard_size=LIMIT, verify=False)
    assert again["weight_files"] == shards  # stable: the same tensors in the same shards
    for name in shards:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()

    record = json.loads((out / "lmkit_meta.json").read_text())
    assert sorted(record["weights_sha256"]) == shards and "model_safetensors_sha256" not in record
    assert torch.equal(logits(hf_model(out, ckpt), family), logits(hf_model(one, ckpt), family))


def test_import_of_a_sharded_export_gives_back_the_weights_and_the_record(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tok)
    out = tmp_path / "hf"
    assert main(["export", str(ckpt), "--out", str(out), "--max-shard-size", "20KB", "--no-verify"]) == 0
    assert len([n for n in weight_files(out) if SHARD.fullmatch(n)]) >= 3
    report = import_hf(out, tmp_path / "back")
    assert report["training_record_kept"]
    a, b = load_state(ckpt), load_state(tmp_path / "back")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = load_meta(tmp_path / "back")
    assert meta["tokens"] == 700 and meta["eval"]["loss"] == 3.5
    assert sorted(meta["imported_from"]["weights_sha256"]) == [n for n in weight_files(out) if SHARD.fullmatch(n)]

    # one shard changed ("fine-tuned" elsewhere): the folder's weights are no longer the record's
    last = sorted(n for n in weight_files(out) if SHARD.fullmatch(n))[-1]
    part = load_file(str(out / last))
    key = next(iter(part))
    part[key] = part[key] * 2
    save_file(part, str(out / last), metadata={"format": "pt"})
    report = import_hf(out, tmp_path / "changed")
    assert not report["training_record_kept"]
    assert "tokens" not in load_meta(tmp_path / "changed")


def test_overwrite_between_layouts_leaves_no_stale_weight_file(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = make_ckpt(tmp_path / "ckpt", tok)
    out = tmp_path / "hf"
    export_hf(ckpt, out, verify=False)
    ref = logits(hf_model(out, ckpt), "decoder")
    export_hf(ckpt, out, overwrite=True, max_shard_size=LIMIT, verify=False)  # single file -> shards
    assert "model.safetensors" not in weight_files(out)  # transformers would prefer it over the index
    assert "model.safetensors.index.json" in weight_files(out)
    assert torch.equal(logits(hf_model(out, ckpt), "decoder"), ref)
    export_hf(ckpt, out, overwrite=True, max_shard_size=2 * LIMIT, verify=False)  # fewer, larger shards
    shards = [x for x in weight_files(out) if SHARD.fullmatch(x)]
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    export_hf(ckpt, out, overwrite=True, verify=False)  # shards -> single file
    assert weight_files(out) == ["model.safetensors"]
    assert torch.equal(logits(hf_model(out, ckpt), "decoder"), ref)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left

    # a shard-named file the export did not write is the user's: --overwrite refuses and keeps it
    (out / "model-00009-of-00009.safetensors").write_bytes(b"mine")
    with pytest.raises(LmkitError, match="did not write"):
        export_hf(ckpt, out, overwrite=True, max_shard_size=LIMIT, verify=False)
    assert (out / "model-00009-of-00009.safetensors").read_bytes() == b"mine"
