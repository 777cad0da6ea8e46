"""Issue 25 item 6: what a user gives `lmkit icl` (and every command with --seed or --device) that
once ended in a traceback is one `lmkit: error:` line naming the file or flag, with status 2.

The table covers: task files holding lone surrogates or binary bytes, a prompt-format flag that is
not UTF-8, --seed outside 0..2**64-1, --device cuda without CUDA, mps without MPS, an unknown device
name; and the one resolve_device itself (auto picks cuda, then mps, then cpu)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmkit.cli import main
from lmkit.errors import LmkitError
from lmkit.models.checkpoint import save_checkpoint
from lmkit.tokenizer import train_tokenizer
from lmkit.train.distributed import Dist, resolve_device
from test_generate import tiny_decoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = train_tokenizer(
        ["the river runs past the old mill and the town waits for spring. 12 + 34 = 46"] * 50,
        vocab_size=380,
        show_progress=False,
    )
    model = tiny_decoder(vocab=tok.vocab_size, max_seq_len=64)
    return save_checkpoint(tmp_path_factory.mktemp("icl-inputs") / "ckpt", model, model.cfg, tok)


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without CUDA or MPS, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def _task_file(kind: str, folder: Path) -> str:
    """A task file of the given kind of bad input (the name is what the error must show)."""
    if kind == "surrogate-input":
        return _write(folder, "sur.jsonl", b'{"input": "a\\ud800b", "target": "x"}\n{"input": "c", "target": "y"}\n')
    if kind == "surrogate-choice":
        return _write(
            folder,
            "surc.jsonl",
            b'{"input": "q", "choices": ["x", "y\\udc00"], "label": 0}\n'
            b'{"input": "r", "choices": ["x", "y"], "label": 1}\n',
        )
    if kind == "surrogate-target":
        return _write(folder, "surt.jsonl", b'{"input": "q", "target": "ok"}\n{"input": "r", "target": "\\udfff"}\n')
    if kind == "not-utf8":
        return _write(folder, "latin.jsonl", '{"input": "caf\xe9", "target": "x"}\n'.encode("latin-1"))
    if kind == "nul-bytes":
        return _write(folder, "nul.jsonl", b"\x00\x01\x02\xff\xfe binary")
    if kind == "png":
        return _write(folder, "image.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    raise AssertionError(kind)


ICL_CASES = [  # (id, extra arguments; "{task:KIND}" names a bad task file, expected fragment of the one line)
    (
        "surrogate in input",
        ["--task", "{task:surrogate-input}"],
        'sur.jsonl:1: "input" holds a lone surrogate U+D800 at character 1',
    ),
    ("surrogate in a choice", ["--task", "{task:surrogate-choice}"], 'surc.jsonl:1: "choices" holds a lone surrogate'),
    ("surrogate in a target", ["--task", "{task:surrogate-target}"], 'surt.jsonl:2: "target" holds a lone surrogate'),
    ("bytes not UTF-8", ["--task", "{task:not-utf8}"], "latin.jsonl:1: not valid UTF-8 (byte 0xe9"),
    ("binary with NUL bytes", ["--task", "{task:nul-bytes}"], "nul.jsonl: looks binary (NUL bytes)"),
    ("a PNG named .jsonl", ["--task", "{task:png}"], "image.jsonl: looks binary (png data)"),
    (
        "flag not UTF-8",
        ["--task", "add2", "--instruction", "\udcff\udcfe"],
        "flags: --instruction holds a lone surrogate U+DCFF at character 0",
    ),
    ("--seed -1", ["--task", "add2", "--seed", "-1"], "--seed must be an integer from 0 to 2**64-1"),
    ("--seed 2**64", ["--task", "add2", "--seed", str(2**64)], "--seed must be an integer from 0 to 2**64-1"),
    (
        "--device cuda without CUDA",
        ["--task", "add2", "--device", "cuda"],
        "--device cuda: no CUDA device is available on this machine",
    ),
    ("--device cuda:1 without CUDA", ["--task", "add2", "--device", "cuda:1"], "--device cuda:1: no CUDA device"),
    ("--device mps without MPS", ["--task", "add2", "--device", "mps"], "--device mps: Apple's MPS is not available"),
    (
        "--device bogus",
        ["--task", "add2", "--device", "bogus"],
        "--device 'bogus' is not a device: use auto, cpu, cuda, cuda:N or mps",
    ),
    ("--device CUDA (case)", ["--task", "add2", "--device", "CUDA"], "--device 'CUDA' is not a device"),
]


@pytest.mark.usefixtures("no_accelerator")
@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in ICL_CASES], ids=[c[0] for c in ICL_CASES])
def test_icl_refuses_in_one_line(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    filled = [_task_file(a[6:-1], tmp_path) if a.startswith("{task:") else a for a in args]
    rc = main(["icl", str(ckpt), "--shots", "0", "--limit", "2", "--n-examples", "4", *filled])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("lmkit: error: "), err
    assert fragment in err[0]


OTHER_CASES = [  # every other command with --seed or --device: (id, argv with {ckpt}/{tmp}, fragment)
    (
        "scale fit --device cuda",
        ["scale", "fit", "{tmp}/points.csv", "--device", "cuda", "--out", "{tmp}/f1"],
        "--device cuda: no CUDA device",
    ),
    (
        "scale fit --device mps",
        ["scale", "fit", "{tmp}/points.csv", "--device", "mps", "--out", "{tmp}/f2"],
        "--device mps: this runs on cuda or cpu only",
    ),
    (
        "scale fit --seed -1",
        ["scale", "fit", "{tmp}/points.csv", "--seed", "-1", "--out", "{tmp}/f3"],
        "--seed must be an integer from 0 to 2**64-1",
    ),
    ("generate --device bogus", ["generate", "{ckpt}", "hi", "--device", "bogus"], "--device 'bogus' is not a device"),
    ("generate --device cuda", ["generate", "{ckpt}", "hi", "--device", "cuda"], "--device cuda: no CUDA device"),
    ("generate --seed -1", ["generate", "{ckpt}", "hi", "--sample", "--seed", "-1"], "--seed must be an integer"),
    (
        "viz attention --device mps",
        ["viz", "attention", "{ckpt}", "hi", "--out", "{tmp}/a.png", "--device", "mps"],
        "--device mps: Apple's MPS is not available",
    ),
    (
        "finetune-head --seed -1",
        ["finetune-head", "{ckpt}", "--task", "seq2seq", "--data", "{tmp}/x.jsonl", "--seed", "-1"],
        "--seed must be an integer from 0 to 2**64-1",
    ),
    (
        "mix --seed 2**70",
        ["mix", "{tmp}/a=1", "--out", "{tmp}/m", "--seed", str(2**70)],
        "--seed must be an integer from 0 to 2**64-1 (18446744073709551615), got 1180591620717411303424",
    ),
    (
        "adapt --seed -5",
        ["adapt", "--domain", "{tmp}", "--general", "{tmp}", "--config", "tiny", "--seed", "-5", "--out", "{tmp}/exp"],
        "--seed must be an integer from 0 to 2**64-1",
    ),
]


@pytest.mark.usefixtures("no_accelerator")
@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES])
def test_other_commands_refuse_seed_and_device_in_one_line(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    rows = [(n, 20 * n, 6 * n * 20 * n * 1.0, 3.0 + 1e6 / n) for n in (1e5, 2e5, 4e5, 8e5)]
    (tmp_path / "points.csv").write_text(
        "params,tokens,flops,loss\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows)
    )
    rc = main([a.replace("{ckpt}", str(ckpt)).replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("lmkit: error: "), err
    assert fragment in err[0]
    assert not (tmp_path / "exp").exists() and not (tmp_path / "m").exists()  # refused before any work


# --------------------------------------------------------------------------- the one resolve_device


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("auto", kinds=("cuda", "cpu")) == torch.device("cpu")  # a float64 fit: never mps
    assert resolve_device("mps", what="--device") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", Dist(rank=3, world=4, local_rank=1)) == torch.device("cuda", 1)  # torchrun
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(LmkitError, match=r"^--device cuda:2: this machine has 2 CUDA devices \(cuda:0..cuda:1\)$"):
        resolve_device("cuda:2", what="--device")


@pytest.mark.usefixtures("no_accelerator")
@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("cuda", "train.device cuda: no CUDA device is available on this machine (use cpu or auto)"),
        ("mps", "train.device mps: Apple's MPS is not available on this machine (use cpu or auto)"),
        ("gpu", "train.device 'gpu' is not a device: use auto, cpu, cuda, cuda:N or mps"),
        ("cuda:", "train.device 'cuda:' is not a device"),
        (" cpu", "train.device ' cpu' is not a device"),
    ],
)
def test_resolve_device_names_the_key_in_one_line(name: str, fragment: str) -> None:
    with pytest.raises(LmkitError) as e:
        resolve_device(name)  # as training calls it, for train.device
    assert str(e.value) == fragment or str(e.value).startswith(fragment)
    assert "\n" not in str(e.value)


def test_no_command_resolves_auto_by_itself() -> None:
    """One resolve_device: no module but lmkit.train.distributed turns ``auto`` into a device."""
    src = Path(__file__).resolve().parent.parent / "src" / "lmkit"
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "distributed.py" and ('== "auto"' in p.read_text() and "cuda.is_available()" in p.read_text())
    ]
    assert offenders == []
