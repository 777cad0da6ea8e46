"""Resume and checkpoint integrity: `--resume` continues from the run folder's own settings and data,
refuses settings and data that differ (unless allowed), and every checkpoint file is checked
against the SHA-256 its meta.json recorded at save."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmkit.cli import main
from lmkit.errors import LmkitError
from lmkit.models.checkpoint import CHECKSUMS_KEY, list_checkpoints, load_meta, load_model, load_tokenizer
from lmkit.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


def _corpus(path: Path, n_docs: int = 80, extra: str = "") -> Path:
    subjects, verbs, objects = ["the cat", "a dog", "my sister"], ["sees", "likes"], ["the bird", "a ball", "the river"]
    lines = []
    for i in range(n_docs):
        words = " ".join(f"{subjects[(i + k) % 3]} {verbs[(i * k) % 2]} {objects[(i + 2 * k) % 3]}." for k in range(6))
        lines.append(json.dumps({"id": f"d{i}", "text": words}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def _pretrain(*args: str) -> int:
    return main(["pretrain", "--quiet", *args])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4-step tiny run (trained once; each test works on its own copy)."""
    root = tmp_path_factory.mktemp("base")
    data = _corpus(root / "data" / "corpus.jsonl")
    run = root / "run"
    assert (
        _pretrain(
            "--config", str(TINY), "--data", str(data), "--out", str(run), "--max-steps", "4", "--train.eval_every", "0"
        )
        == 0
    )
    return run, data


@pytest.fixture()
def run(base_run: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(base_run[0], copy)
    return copy


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    # (a progress bar may share the line: take it from the error on)
    err = [
        line[line.index("lmkit: error:") :] for line in capsys.readouterr().err.splitlines() if "lmkit: error:" in line
    ]
    assert len(err) == 1, err
    return err[0]


def _flip_byte(path: Path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- resume settings


def test_readme_resume_command_continues_the_run(run: Path) -> None:
    # the README's command: --config and --out only, no --data (it used to say "no training data")
    assert _pretrain("--config", str(TINY), "--out", str(run), "--resume", "--max-steps", "6") == 0
    assert list_checkpoints(run)[-1].name == "ckpt-0000006"
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    # and --config is optional: everything comes from the run folder
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "7") == 0
    assert load_meta(run)["step"] == 7


def test_conflicting_override_is_refused_naming_the_key(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = [p.name for p in list_checkpoints(run)]
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "6", "--model.d_model", "128") == 2
    msg = _error(capsys)
    assert "model.d_model" in msg and "64" in msg and "128" in msg and "resolved.yaml" in msg
    assert _pretrain("--config", str(TINY), "--out", str(run), "--resume", "--train.lr", "1") == 2
    assert "train.lr" in _error(capsys)
    assert [p.name for p in list_checkpoints(run)] == before  # nothing trained


def test_stop_condition_and_per_invocation_changes_are_allowed(run: Path) -> None:
    assert (
        _pretrain(
            "--out", str(run), "--resume", "--train.max_steps", "5", "--train.log_every", "2", "--train.ckpt_every", "0"
        )
        == 0
    )
    meta = load_meta(run)
    assert meta["step"] == 5 and meta["horizon"]["reason"] == "max_steps=5"


def test_other_data_is_refused_and_new_data_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, run = _corpus(tmp_path / "data" / "corpus.jsonl"), tmp_path / "run"
    assert (
        _pretrain(
            "--config", str(TINY), "--data", str(data), "--out", str(run), "--max-steps", "3", "--train.eval_every", "0"
        )
        == 0
    )
    tokenizer_sha = load_meta(run)["tokenizer_sha256"]
    other = _corpus(tmp_path / "other.jsonl", n_docs=90)
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "5", "--data", str(other)) == 2
    msg = _error(capsys)
    assert "data.paths" in msg and "--new-data" in msg
    # the same path, but the file changed since the run was trained on it
    with data.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "the dog sees a new ball."}) + "\n")
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "5") == 2
    msg = _error(capsys)
    assert str(data) in msg and "bytes now" in msg and "--new-data" in msg
    assert list_checkpoints(run)[-1].name == "ckpt-0000003"
    # --new-data: continues on the data given now, with the run's tokenizer, and says so in meta.json
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "5", "--data", str(other), "--new-data") == 0
    meta = load_meta(run)
    assert meta["step"] == 5
    assert [s["path"] for s in meta["data_fingerprint"]["sources"]] == [str(other.resolve())]
    assert meta["data_changes"] and meta["data_changes"][-1]["step"] == 3
    assert meta["data_fingerprint"]["tokenizer_sha256"] == tokenizer_sha
    # and the next resume takes the new data as the run's own
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "6") == 0


def test_new_data_without_resume_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _corpus(tmp_path / "c.jsonl")
    assert _pretrain("--config", str(TINY), "--data", str(data), "--out", str(tmp_path / "r"), "--new-data") == 2
    assert "--new-data only applies with --resume" in _error(capsys)


# --------------------------------------------------------------------------- checksums


def test_checkpoint_records_the_checksum_of_every_file(run: Path) -> None:
    ckpt = list_checkpoints(run)[-1]
    sums = load_meta(ckpt)[CHECKSUMS_KEY]
    assert set(sums) == {"model.safetensors", "config.json", "tokenizer.json", "resolved.yaml", "train_state/state.pt"}


def test_flipped_byte_in_weights_is_refused_naming_the_file(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = list_checkpoints(run)[-1]
    _flip_byte(ckpt / "model.safetensors")
    with pytest.raises(LmkitError, match=r"model\.safetensors: checksum mismatch .*changed since it was saved"):
        load_model(ckpt)
    for argv in (
        ["generate", str(ckpt), "the cat", "--max-new-tokens", "2"],
        ["evaluate", str(ckpt)],
        ["quantize", str(ckpt), "--to", "int8", "--out", str(run.parent / "q")],
        ["export", str(ckpt), "--out", str(run.parent / "hf")],
    ):
        assert main(argv) == 2, argv
        msg = _error(capsys)
        assert str(ckpt / "model.safetensors") in msg and "checksum mismatch" in msg and "--no-verify" in msg
    assert not (run.parent / "q").exists() and not (run.parent / "hf").exists()
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "6") == 2
    assert "model.safetensors: checksum mismatch" in _error(capsys)


def test_no_verify_loads_the_changed_file(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = list_checkpoints(run)[-1]
    _flip_byte(ckpt / "model.safetensors")
    assert load_model(ckpt, verify=False) is not None
    assert main(["generate", str(ckpt), "the cat", "--max-new-tokens", "2", "--no-verify"]) == 0
    assert main(["evaluate", str(ckpt), "--no-verify"]) == 0


def test_changed_train_state_and_tokenizer_are_refused(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = list_checkpoints(run)[-1]
    tok = ckpt / "tokenizer.json"
    tok.write_text(tok.read_text(encoding="utf-8") + " ", encoding="utf-8")
    with pytest.raises(LmkitError, match=r"tokenizer\.json: checksum mismatch"):
        load_tokenizer(ckpt)
    shutil.copy(run / "tokenizer.json", tok)  # the same tokenizer again
    _flip_byte(ckpt / "train_state" / "state.pt", offset=len((ckpt / "train_state" / "state.pt").read_bytes()) // 2)
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "6") == 2
    assert "train_state/state.pt: checksum mismatch" in _error(capsys)


def test_checkpoint_without_checksums_still_loads_and_resumes(run: Path) -> None:
    # as written by an older lmkit: no checksums and no data fingerprint in meta.json
    ckpt = list_checkpoints(run)[-1]
    meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    del meta[CHECKSUMS_KEY], meta["data_fingerprint"], meta["data_changes"]
    (ckpt / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert load_model(ckpt, verify=True) is not None
    assert load_tokenizer(ckpt, verify=True).sha256 == meta["tokenizer_sha256"]
    assert _pretrain("--out", str(run), "--resume", "--max-steps", "5") == 0
    assert CHECKSUMS_KEY in load_meta(run)  # the new checkpoint has them


def test_quantized_and_finetuned_checkpoints_record_checksums(run: Path, tmp_path: Path) -> None:
    from lmkit.config import ModelConfig
    from lmkit.models import build_model
    from lmkit.ship.quantize import quantize_checkpoint
    from lmkit.train.finetune.data import FinetuneConfig
    from lmkit.train.finetune.heads import SequenceClassifier, load_finetuned, save_finetuned

    q = tmp_path / "q"
    quantize_checkpoint(list_checkpoints(run)[-1], q, to="int8", show_progress=False)
    assert set(load_meta(q)[CHECKSUMS_KEY]) == {"model.safetensors", "config.json", "tokenizer.json", "resolved.yaml"}
    load_model(q)  # its checksums are its own, not the source's
    _flip_byte(q / "model.safetensors")
    with pytest.raises(LmkitError, match=r"model\.safetensors: checksum mismatch"):
        load_model(q)

    tok = load_tokenizer(run)
    enc = build_model(
        ModelConfig(
            family="encoder",
            vocab_size=tok.vocab_size,
            d_model=32,
            n_layers=1,
            n_heads=2,
            max_seq_len=32,
            pos_encoding="learned",
        )
    )
    ft = save_finetuned(
        tmp_path / "ft",
        SequenceClassifier(enc, 2),
        tok,
        FinetuneConfig(task="sequence-classification"),
        {"labels": ["no", "yes"]},
        str(list_checkpoints(run)[-1]),
    )
    assert "head.safetensors" in load_meta(ft)[CHECKSUMS_KEY]
    assert load_finetuned(ft).labels == ["no", "yes"]
    _flip_byte(ft / "head.safetensors")
    with pytest.raises(LmkitError, match=r"head\.safetensors: checksum mismatch"):
        load_finetuned(ft)
