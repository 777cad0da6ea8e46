"""The hub: push/pull round trips with checksums on a folder and on memory://, tampering detected,
names that could escape the hub refused, revisions kept, search by family, task, size and card."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.models import build_model
from lmkit.models.checkpoint import load_meta, load_model, save_checkpoint
from lmkit.ship.card.render import parse_front_matter
from lmkit.ship.hub import Hub, default_hub, hub_url, parse_spec, validate_name
from lmkit.ship.hub_search import search


def ckpt(
    path: Path, family: str = "decoder", d_model: int = 32, meta: dict | None = None, train_state: bool = False
) -> Path:
    cfg = ModelConfig(
        family=family,
        vocab_size=300,
        d_model=d_model,
        n_layers=1,
        n_heads=4,  # type: ignore[arg-type]
        max_seq_len=32,
        pos_encoding="learned" if family == "encoder" else "rotary",
    )
    torch.manual_seed(len(str(path)))
    model = build_model(cfg)
    m = {
        "step": 7,
        "tokens": 700,
        "params": sum(p.numel() for p in model.parameters()),
        "eval": {"loss": 3.5, "perplexity": 33.1},
    }
    m.update(meta or {})
    return save_checkpoint(path, model, cfg, meta=m, train_state={"step": 7} if train_state else None)


@pytest.fixture(params=["folder", "file-url", "memory"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Hub:
    url = {
        "folder": str(tmp_path / "hub"),
        "file-url": (tmp_path / "hub").as_uri(),
        "memory": f"memory://hub-{uuid.uuid4().hex}",
    }[request.param]
    return Hub(url)


def test_push_pull_round_trip_with_checksums(hub: Hub, tmp_path: Path) -> None:
    src = ckpt(tmp_path / "ck", train_state=True)
    m = hub.push(src, "alice/tiny", message="first")
    assert m["revision"] == 1 and m["message"] == "first"
    assert set(m["files"]) == {"config.json", "meta.json", "model.safetensors", "README.md"}  # no train_state
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 for e in m["files"].values())
    hub.pull("alice/tiny", tmp_path / "out")
    for f in ("config.json", "meta.json", "model.safetensors"):
        assert (tmp_path / "out" / f).read_bytes() == (src / f).read_bytes()
    model = load_model(tmp_path / "out")  # the pulled folder is a working checkpoint
    assert torch.equal(model.tok_emb.weight, load_model(src).tok_emb.weight)
    fm, _ = parse_front_matter((tmp_path / "out" / "README.md").read_text())
    assert fm["pipeline_tag"] == "text-generation"
    m2 = hub.push(src, "alice/full", include_train_state=True)
    assert "train_state/state.pt" in m2["files"]
    hub.pull("alice/full", tmp_path / "full")
    assert (tmp_path / "full" / "train_state" / "state.pt").is_file()


def test_tampered_file_is_detected_and_nothing_is_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = Hub(str(tmp_path / "hub"))
    m = hub.push(ckpt(tmp_path / "ck"), "tiny")
    blob = tmp_path / "hub" / "models" / "tiny" / "@blobs" / m["files"]["model.safetensors"]["sha256"]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(LmkitError, match="model.safetensors fails its checksum"):
        hub.pull("tiny", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temporary folder removed
    card = tmp_path / "hub" / "models" / "tiny" / "@blobs" / m["files"]["README.md"]["sha256"]
    card.write_text(card.read_text() + "\nInjected claim.\n")
    with pytest.raises(LmkitError, match="README.md fails its checksum"):
        hub.card("tiny")
    assert search(hub, "injected") == []  # a card that fails its checksum is not trusted by search
    assert "fails its checksum" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "a/../../b",
        "/etc/passwd",
        "a\\b",
        "a//b",
        "a/",
        "",
        " ",
        ".",
        "..",
        "a/b/c",
        "x y",
        "na@me",
        "~root",
        "C:/x",
        "-lead",
        "a/.hidden",
        "é",
    ],
)
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(LmkitError):
        validate_name(name)
    hub = Hub(str(tmp_path / "hub"))
    with pytest.raises(LmkitError):
        hub.push(ckpt(tmp_path / "ck"), name)
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").rglob("*.json"))
    assert not (tmp_path / "evil").exists()


def test_good_names_and_specs() -> None:
    for n in ("tiny", "alice/tiny-decoder", "org_1/model.v2", "A1/b"):
        assert validate_name(n) == n
    assert parse_spec("alice/tiny@3") == ("alice/tiny", 3)
    assert parse_spec("alice/tiny") == ("alice/tiny", None)
    assert parse_spec("alice/tiny@latest") == ("alice/tiny", None)
    for bad in ("tiny@0", "tiny@x", "tiny@-1", "../x@1"):
        with pytest.raises(LmkitError):
            parse_spec(bad)


def test_a_manifest_cannot_write_outside_the_output(tmp_path: Path) -> None:
    hub = Hub(str(tmp_path / "hub"))
    m = hub.push(ckpt(tmp_path / "ck"), "tiny")
    path = tmp_path / "hub" / "models" / "tiny" / "@revisions" / "1.json"
    m = json.loads(path.read_text())
    m["files"]["../../escaped.json"] = m["files"]["config.json"]
    path.write_text(json.dumps(m))
    with pytest.raises(LmkitError, match="unsafe file path"):
        hub.pull("tiny", tmp_path / "out")
    assert not (tmp_path / "escaped.json").exists() and not (tmp_path / "out").exists()


def test_revisions_are_kept_and_pullable(hub: Hub, tmp_path: Path) -> None:
    hub.push(ckpt(tmp_path / "a", meta={"tokens": 100}), "m")
    m2 = hub.push(ckpt(tmp_path / "b", meta={"tokens": 200}), "m")
    assert m2["revision"] == 2 and hub.revisions("m") == [1, 2]
    hub.pull("m@1", tmp_path / "one")
    hub.pull("m", tmp_path / "latest")
    assert load_meta(tmp_path / "one")["tokens"] == 100 and load_meta(tmp_path / "latest")["tokens"] == 200
    with pytest.raises(LmkitError, match="no such revision"):
        hub.pull("m@3", tmp_path / "three")
    with pytest.raises(LmkitError, match="not in hub"):
        hub.pull("nothere", tmp_path / "x")
    # unchanged files are stored once
    m3 = hub.push(tmp_path / "b", "m")
    assert m3["uploaded_blobs"] == 0 and m3["revision"] == 3


def test_pull_refuses_a_non_empty_out_without_overwrite(tmp_path: Path) -> None:
    hub = Hub(str(tmp_path / "hub"))
    hub.push(ckpt(tmp_path / "ck"), "tiny")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LmkitError, match="--overwrite"):
        hub.pull("tiny", out)
    assert (out / "notes.txt").read_text() == "mine"
    # --overwrite replaces a previous pull, never a folder of the user's own files
    with pytest.raises(LmkitError, match="not a previous lmkit"):
        hub.pull("tiny", out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    hub.pull("tiny", out)
    hub.pull("tiny", out, overwrite=True)
    assert (out / "model.safetensors").is_file()
    (tmp_path / "empty").mkdir()
    hub.pull("tiny", tmp_path / "empty")  # an empty folder is fine


def test_search_by_name_family_task_size_and_card(hub: Hub, tmp_path: Path) -> None:
    hub.push(ckpt(tmp_path / "d", "decoder", d_model=32), "alice/legal-gpt")
    hub.push(ckpt(tmp_path / "e", "encoder", d_model=32), "bob/bert-mini")
    hub.push(ckpt(tmp_path / "s", "encdec", d_model=64), "t5-small-ish")
    names = lambda r: [m["name"] for m in r]  # noqa: E731
    assert names(search(hub, "family:decoder")) == ["alice/legal-gpt"]
    assert names(search(hub, "", family="encoder")) == ["bob/bert-mini"]
    assert names(search(hub, "task:fill-mask")) == ["bob/bert-mini"]
    assert names(search(hub, "text2text-generation")) == ["t5-small-ish"]
    assert names(search(hub, "legal")) == ["alice/legal-gpt"]
    archs = {m["name"]: m["info"]["architecture"] for m in hub.entries()}
    assert archs == {
        "alice/legal-gpt": "LlamaForCausalLM",
        "bob/bert-mini": "BertForMaskedLM",
        "t5-small-ish": "T5ForConditionalGeneration",
    }
    assert names(search(hub, "t5forconditionalgeneration")) == ["t5-small-ish"]  # by transformers class
    sizes = {m["name"]: m["info"]["params"] for m in hub.entries()}
    big = sizes["t5-small-ish"]
    assert names(search(hub, f"size>={big}")) == ["t5-small-ish"]
    assert set(names(search(hub, f"size<{big}"))) == {"alice/legal-gpt", "bob/bert-mini"}
    assert names(search(hub, "Chinchilla")) != []  # card text (the limitations section) is searched
    assert names(search(hub, "family:decoder bert")) == []  # every term must match
    assert [m["name"] for m in hub.entries()] == ["alice/legal-gpt", "bob/bert-mini", "t5-small-ish"]


def test_hub_location_flag_env_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LMKIT_HUB", raising=False)
    assert default_hub() == str(tmp_path / "cache" / "lmkit" / "hub") == hub_url()
    monkeypatch.setenv("LMKIT_HUB", str(tmp_path / "env-hub"))
    assert hub_url() == str(tmp_path / "env-hub") and hub_url("memory://x") == "memory://x"


def test_cli_push_list_search_show_pull(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMKIT_HUB", str(tmp_path / "hub"))
    src = ckpt(tmp_path / "ck", "encoder")
    (src / "README.md").write_text("---\nlicense: mit\npipeline_tag: fill-mask\n---\n\n# my own card\n")
    assert main(["hub", "push", str(src), "me/enc", "-m", "hello"]) == 0
    assert "me/enc@1" in capsys.readouterr().out
    assert main(["hub", "list"]) == 0
    out = capsys.readouterr().out
    assert "me/enc" in out and "fill-mask" in out and "encoder" in out
    assert main(["hub", "search", "family:encoder", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "me/enc"
    # card words match from their start: "mit" is this card's licence, not the "limitations" of others
    hub = Hub(str(tmp_path / "hub"))
    hub.push(ckpt(tmp_path / "ck2", "decoder", d_model=32), "me/dec")
    assert "limitations" in hub.read_file("me/dec", 1, "README.md").decode().lower()
    assert [m["name"] for m in search(hub, "mit")] == ["me/enc"]
    assert [m["name"] for m in search(hub, "limit")] == ["me/dec"]
    assert main(["hub", "show", "me/enc"]) == 0
    assert "# my own card" in capsys.readouterr().out  # the checkpoint's own README is the card
    assert main(["hub", "pull", "me/enc@1", "--out", str(tmp_path / "got")]) == 0
    assert (tmp_path / "got" / "model.safetensors").is_file()
    assert main(["hub", "push", str(src), "../x"]) == 2
    assert "not allowed" in capsys.readouterr().err
    for argv in (["hub", "--hub", str(tmp_path / "other"), "list"], ["hub", "list", "--hub", str(tmp_path / "other")]):
        assert main(argv) == 0
        assert "no models" in capsys.readouterr().out
