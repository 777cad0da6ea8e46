"""``lmkit compare`` (issue 29): two lmkit decoders of different sizes and an imported tiny GPT-2 with its
own tokenizer, scored on a text the test writes, with a broken checkpoint among them.

Checked: each model's bits per byte equals ``lmkit evaluate --data`` over the same whole text to 1e-9;
the printed table and compare.json agree; compare.png exists; the broken checkpoint is a row with its
error; the verdict names the models the numbers favour; the cost maths inverts the law.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from lmkit.cli import main  # noqa: E402
from lmkit.config import ModelConfig  # noqa: E402
from lmkit.lab.compare.cost import bpb_to_loss, compute_to_reach, frontier_loss, scratch_cost  # noqa: E402
from lmkit.lab.compare.verdict import decide, memory_score, speed_score  # noqa: E402
from lmkit.models import build_model  # noqa: E402
from lmkit.models.checkpoint import save_checkpoint  # noqa: E402
from lmkit.plan.chinchilla import get_fit  # noqa: E402
from lmkit.tokenizer import train_tokenizer  # noqa: E402
from test_foundation_downstream import _build, _write_texts  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SPEED = ["--speed-prompt-tokens", "12", "--speed-new-tokens", "6"]


def _decoder(path: Path, tok: Any, d_model: int, n_layers: int, seed: int) -> Path:
    cfg = ModelConfig(
        family="decoder", vocab_size=tok.vocab_size, d_model=d_model, n_layers=n_layers, n_heads=4, max_seq_len=64
    )
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(cfg), cfg, tokenizer=tok, meta={})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("compare")
    text = _write_texts(root / "text" / "held_out.jsonl", seed=5, n=12)
    docs = [json.loads(line)["text"] for line in text.read_text(encoding="utf-8").splitlines()]
    tok = train_tokenizer(docs * 4, vocab_size=400, show_progress=False)
    small = _decoder(root / "small", tok, 32, 1, 0)
    big = _decoder(root / "big", tok, 64, 2, 1)
    gpt2 = _build("gpt2", root / "gpt2")["ckpt"]
    broken = root / "broken"
    shutil.copytree(small, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated download
    task = root / "task.jsonl"
    task.write_text(
        "".join(
            json.dumps({"input": f"Who keeps the {o}?", "choices": ["the licensee", "the tenant"], "label": i % 2})
            + "\n"
            for i, o in enumerate(["records", "rent", "notice", "deposit", "keys", "records"])
        ),
        encoding="utf-8",
    )
    return {"root": root, "text": text, "small": small, "big": big, "gpt2": gpt2, "broken": broken, "task": task}


@pytest.fixture(scope="module")
def run(world: dict[str, Any]) -> dict[str, Any]:
    """One comparison, printed as a table, with its files in --out."""
    import contextlib
    import io

    out = world["root"] / "cmp"
    argv = ["compare", str(world["small"]), str(world["big"]), str(world["gpt2"]), str(world["broken"])]
    argv += ["--data", str(world["text"]), "--terms", "licensee", "café keys", "--out", str(out), "--quiet"]
    argv += ["--task", str(world["task"]), "--shots", "0", "1", "--budget-hours", "1", *SPEED]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    report = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    return {"out": out, "table": buf.getvalue(), "report": report}


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["models"]}


def test_bits_per_byte_equals_lmkit_evaluate_over_the_whole_text(
    world: dict[str, Any], run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(run["report"])
    for key in ("small", "big", "gpt2"):
        ckpt = world[key]
        row = next(r for r in rows.values() if r["checkpoint"] == str(ckpt))
        capsys.readouterr()
        assert main(["evaluate", str(ckpt), "--data", str(world["text"]), "--batches", "100000", "--json"]) == 0
        ev = json.loads(capsys.readouterr().out)
        assert row["error"] is None
        assert abs(row["bits_per_byte"] - ev["bits_per_byte"]) <= 1e-9
        assert row["scored_tokens"] == int(ev["tokens"])
    gpt2 = next(r for r in rows.values() if r["checkpoint"] == str(world["gpt2"]))
    small = next(r for r in rows.values() if r["checkpoint"] == str(world["small"]))
    assert gpt2["origin"] == "imported" and gpt2["license"] == "apache-2.0" and gpt2["base_model"]
    assert small["origin"] == "own" and small["license"] is None
    assert gpt2["vocab_size"] != small["vocab_size"]  # another tokenizer, compared on the same bytes
    assert gpt2["tokenizer_kind"] == "byte-level BPE" and gpt2["context"] == 64
    big = next(r for r in rows.values() if r["checkpoint"] == str(world["big"]))
    assert big["params"] > small["params"]


def test_broken_checkpoint_is_a_row_with_its_error(world: dict[str, Any], run: dict[str, Any]) -> None:
    rows = _rows(run["report"])
    bad = next(r for r in rows.values() if r["checkpoint"] == str(world["broken"]) or r["name"] == "broken")
    assert bad["error"] and "\n" not in bad["error"]
    line = next(line for line in run["table"].splitlines() if line.startswith("broken"))
    assert "error" in line and bad["error"] in line


def test_table_and_json_agree_and_the_plot_exists(run: dict[str, Any]) -> None:
    table = run["table"].splitlines()
    head = table[0]
    assert "acc 0-shot [95%]" in head and "acc 1-shot [95%]" in head
    for r in run["report"]["models"]:
        line = next(x for x in table if x.startswith(r["name"] + " "))
        if r["error"]:
            continue
        assert f"{r['bits_per_byte']:.4f}" in line
        assert f"{r['fertility']['tokens_per_word']:.2f}" in line
        assert f"{r['speed']['generated_tokens_per_s']:,.1f}" in line
        assert f"{r['memory']['inference_bytes'] / 1e9:.2f}" in line
        m = r["memory"]
        fits = [m["inference_fits"], m["inference_int8_fits"], m["train_fits"]]
        assert "/".join("yes" if f else "no" for f in fits) in line
        assert fits == [
            b <= m["available_bytes"] for b in (m["inference_bytes"], m["inference_int8_bytes"], m["train_bytes"])
        ]
        for x in r["task"]["results"]:
            assert 0 <= x["ci_low"] <= x["value"] <= x["ci_high"] <= 1
            assert f"{x['value']:.2f} [{x['ci_low']:.2f},{x['ci_high']:.2f}]" in line
        assert [t["term"] for t in r["fertility"]["terms"]] == ["licensee", "café keys"]
        assert r["memory"]["inference_int8_bytes"] < r["memory"]["inference_bytes"] < r["memory"]["train_bytes"]
    png = run["out"] / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in run["out"].iterdir()) == ["compare.json", "compare.png"]
    for line in run["report"]["verdict"]["lines"]:
        assert line in run["table"]


def test_verdict_names_the_models_the_numbers_favour(run: dict[str, Any]) -> None:
    rep = run["report"]
    ok = [r for r in rep["models"] if not r["error"]]
    v = rep["verdict"]
    assert v["best"] == min(ok, key=lambda r: r["bits_per_byte"])["name"]
    assert all(r["bits_per_byte"] < 8 for r in ok)  # each model saves bits: each takes part in every measure
    gb = {r["name"]: (8 - r["bits_per_byte"]) / (r["memory"]["inference_bytes"] / 1e9) for r in ok}
    assert v["best_per_memory"] == max(gb, key=lambda k: gb[k])
    ms = {r["name"]: (8 - r["bits_per_byte"]) * r["speed"]["generated_tokens_per_s"] for r in ok}
    assert v["best_per_speed"] == max(ms, key=lambda k: ms[k])
    assert v["best_foundation"] == next(r["name"] for r in ok if r["origin"] == "imported")
    found = next(r for r in ok if r["origin"] == "imported")
    sc = found["scratch"]
    assert isinstance(v["scratch_within_budget"], bool) and v["scratch_within_budget"] == (sc["hours"] <= 1)
    # the cost is counted in the tokens of the user's own model (the first own row)
    own = next(r for r in ok if r["origin"] == "own")
    bpt = own["loss"] / (own["bits_per_byte"] * math.log(2))
    assert rep["own_bytes_per_token"] == pytest.approx(bpt)
    assert sc["target_loss"] == pytest.approx(found["bits_per_byte"] * math.log(2) * bpt)


def test_cost_inverts_the_law_and_refuses_below_its_floor() -> None:
    law = get_fit("chinchilla")
    target = 2.5
    c = compute_to_reach(law, target)
    assert c is not None
    assert frontier_loss(law, c) <= target < frontier_loss(law, c / 1.01)
    assert compute_to_reach(law, law.E) is None and compute_to_reach(law, law.E - 0.1) is None
    sc = scratch_cost(1.0, 2.5 / math.log(2), law, 1e12)  # bpb 1 at 2.5/ln2 bytes per token: a loss of 2.5
    assert sc["target_loss"] == pytest.approx(2.5) and sc["flops"] == pytest.approx(c)
    assert sc["hours"] == pytest.approx(c / 1e12 / 3600) and sc["params"] * sc["tokens"] * 6 == pytest.approx(c)
    assert bpb_to_loss(1.0, 1.0) == pytest.approx(math.log(2))


def test_verdict_without_scores_and_the_measures_skip_rows_missing_figures() -> None:
    v = decide([{"name": "x", "error": "broken"}])
    assert v["best"] is None and "error" in v["lines"][0]
    row = {"name": "y", "error": None, "bits_per_byte": 1.0, "memory": {"inference_bytes": 2e9}, "speed": None}
    assert memory_score(row) == pytest.approx(3.5) and speed_score(row) is None
    worse = {"name": "z", "error": None, "bits_per_byte": 9.0, "memory": {"inference_bytes": 1e9}}
    slow = {**worse, "name": "w", "bits_per_byte": 8.5, "speed": {"generated_tokens_per_s": 10.0}}
    assert memory_score(worse) is None and speed_score(slow) is None  # saving nothing ranks nowhere
    v = decide([worse, slow])
    assert v["best"] == "w" and v["best_per_memory"] is None and v["best_per_speed"] is None
    assert any("saves anything" in line for line in v["lines"])
    dec = {"name": "dec", "error": None, "objective": "clm", "bits_per_byte": 3.0}
    enc = {"name": "enc", "error": None, "objective": "mlm", "bits_per_byte": 1.0}  # both sides in view: lower
    v = decide([enc, dec])
    assert v["best"] == "dec" and any(
        line.startswith("Among the masked-LM models") and "enc" in line for line in v["lines"]
    )
    assert decide([enc])["best"] == "enc"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--budget-hours", "0"], "--budget-hours"),
        (["--speed-new-tokens", "1"], "--speed-new-tokens"),
        (["--task", "nope.jsonl"], "--task nope.jsonl"),
        (["--shots", "-1"], "--shots"),
        (["--general", "nope.txt"], "--general nope.txt: no such file"),
    ],
)
def test_bad_flags_are_one_line(
    world: dict[str, Any], flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(world["small"]), "--data", str(world["text"]), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


def test_out_is_never_a_folder_of_the_users(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    mine = world["root"] / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    argv = ["compare", str(world["small"]), "--data", str(world["text"]), "--out", str(mine), "--overwrite", *SPEED]
    assert main(argv) == 2
    assert (mine / "notes.txt").read_text() == "keep me" and "lmkit: error" in capsys.readouterr().err


def test_an_encoder_answers_choices_by_fill_mask_scoring(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from lmkit.lab.compare.masked import MaskedChoiceLM
    from lmkit.models.checkpoint import load_model, load_tokenizer

    tok = load_tokenizer(world["small"])
    cfg = ModelConfig(family="encoder", vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=64)
    torch.manual_seed(2)
    enc = save_checkpoint(world["root"] / "enc", build_model(cfg), cfg, tokenizer=tok, meta={})
    model = load_model(enc).eval()
    lm = MaskedChoiceLM(model, tok, batch_size=2)
    context, cont = "Who keeps the rent? Answer:", " the licensee"
    ((got, n),) = lm.loglikelihood([(context, cont)])
    ids = tok.encode(context + cont)
    n_ctx = len(tok.encode(context))  # the context ends on a token boundary here
    full = tok.wrap(ids)
    at = len(tok.template[0])
    want = 0.0
    with torch.no_grad():
        for p in range(at + n_ctx, at + len(ids)):  # mask one continuation token at a time, read both sides
            masked = list(full)
            masked[p] = tok.mask_id
            want += float(model(torch.tensor([masked]))[0, p].log_softmax(-1)[full[p]])
    assert n == len(ids) - n_ctx > 1 and got == pytest.approx(want, abs=1e-4)
    capsys.readouterr()
    argv = ["compare", str(enc), "--data", str(world["text"]), "--task", str(world["task"]), "--shots", "0"]
    assert main([*argv, "--speed-new-tokens", "0", "--json", "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out)["models"][0]
    assert (
        row["error"] is None and row["family"] == "encoder" and row["task"]["how"] == "fill-mask scoring of the choices"
    )
    assert [x["shots"] for x in row["task"]["results"]] == [0] and row.get("speed") is None
    free = world["root"] / "free.jsonl"
    free.write_text(json.dumps({"input": "Who pays?", "target": "the tenant"}) + "\n" * 1, encoding="utf-8")
    free.write_text(free.read_text() * 4, encoding="utf-8")
    argv = ["compare", str(enc), "--data", str(world["text"]), "--task", str(free), "--speed-new-tokens", "0"]
    assert main([*argv, "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["task"]["status"] == "needs finetune-head"


def test_the_users_scaling_law_prices_the_scratch_run(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from lmkit.plan.chinchilla import load_scaling_law

    law = {"E": 1.0, "A": 300.0, "B": 500.0, "alpha": 0.3, "beta": 0.3}
    fit = world["root"] / "fit.json"
    fit.write_text(json.dumps({"points": 12, "approach3": {"law": law}}), encoding="utf-8")
    capsys.readouterr()
    argv = ["compare", str(world["small"]), "--data", str(world["text"]), "--scaling-law", str(fit)]
    assert main([*argv, "--speed-new-tokens", "0", "--json", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    row = rep["models"][0]
    assert rep["scaling_law"]["name"] == row["scratch"]["law"] == load_scaling_law(str(fit)).name
    want = compute_to_reach(load_scaling_law(str(fit)), row["loss"])  # the own model: its own tokens
    assert row["scratch"]["flops"] == pytest.approx(want)
    assert row["scratch"]["hours"] == pytest.approx(want / rep["machine"]["training_rate_flops"] / 3600)
