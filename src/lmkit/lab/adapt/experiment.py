"""Domain adaptation measured as BloombergGPT did: ``lmkit adapt`` (its flags: :mod:`lmkit.cli.adapt`).

The question a user brings: does domain text in the mix, a domain tokenizer, or continued
pre-training on domain text help on the domain, and what does each cost on general text?
The experiment, in the order :func:`run_adapt` does it (each step saved, so a killed run resumes):

1. **Held-out split first** (:mod:`lmkit.lab.adapt.split`). Every domain and general document goes
   to training or to held-out by a seeded hash of its text, before anything is trained: identical
   documents land on the same side, and no tokenizer or model ever sees the held-out text. A set
   with too few documents for that (all on one side) holds out the closing paragraphs of each
   document instead; ``split.json`` and the report say which rule each set got.
2. **Tokenizers** (:mod:`lmkit.lab.adapt.tokenizers`): one trained on domain text, one on general
   text, one on both; fertility on the held-out sets, the split of ``--terms``, vocabulary overlap.
3. **Arms.** One model per domain share in ``--mixes``: a mix of the two training sets in token
   proportions (``lmkit.data.mix``: every mix has the same number of tokens), then a normal
   ``lmkit pretrain`` run of the base config (same model, same tokenizer: the mix tokenizer, same
   seed and so the same initial weights, same stop condition, ``--budget`` FLOPs when given). With
   ``--continue-from CKPT`` two more: ``base`` (that checkpoint as it is) and ``dapt`` (it,
   pre-trained further on the domain training text at the same budget: Gururangan et al.'s DAPT).
   Each run's card (``card.md``) records its mix.
4. **Evaluation** in bits per byte (``lmkit.infer.evaluate``) on the held-out domain and general
   text; bits per byte do not depend on the tokenizer, so every arm compares fairly.
5. **Report** (:mod:`lmkit.lab.adapt.report`): ``report.md``, ``adapt.json``, ``tradeoff.png``.

Resuming. ``adapt-settings.json`` records everything that shapes the results (inputs' paths,
sizes and modification times, the resolved base config, mixes, budget, seed...). Run again with
the same settings, the experiment skips what is done (the split, saved tokenizers, finished arms
with their ``result.json``), resumes an arm's training from its newest checkpoint (lmkit's exact
resume: the same loss curve), and rebuilds the report, which comes out the same. ``--overwrite``
starts again in a folder only when everything in it is what an experiment writes (:data:`OUTPUT_PATHS`).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError
from lmkit.files import check_out_dir, write_json_atomic
from lmkit.lab.adapt.split import make_split, split_dir

SETTINGS_FILE = "adapt-settings.json"
SETS = ("domain", "general")
#: every path an experiment writes (and the temporary names a killed one may leave): what --overwrite
#: may replace (lmkit.files.check_out_dir); a file or folder the user added makes it refuse instead
OUTPUT_PATHS = re.compile(
    r"adapt-settings\.json|adapt\.json|report\.md|tradeoff\.png"
    r"|\.report\.md\.tmp|\.tradeoff\.png\.tmp\.png|\.(adapt|adapt-settings)\.json\.[^/]+\.tmp"
    r"|(split|\.split\.partial|tokenizers)(/.+)?"
    r"|arms(/[^/]+(/(result\.json|card\.md|\.card\.md\.tmp|\.result\.json\.[^/]+\.tmp"
    r"|(run|data|\.data\.partial-[^/]+)(/.+)?))?)?"
)


@dataclass
class AdaptSettings:
    """What one experiment is: its inputs, base config and arms."""

    domain: list[str]
    general: list[str]
    config: str  # the base run config (a YAML path or a recipe name such as ``tiny``)
    mixes: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0])
    continue_from: str | None = None  # a checkpoint: adds the ``base`` and ``dapt`` arms
    budget: float | None = None  # training FLOPs of every arm; None: the base config's stop conditions
    heldout: float = 0.1  # share of each set's documents held out
    vocab_size: int | None = None  # of the three tokenizers; None: the base config's model.vocab_size
    mix_tokens: int | None = None  # tokens in every mix; None: the smaller training set's tokens
    seed: int = 0
    text_field: str = "text"
    terms: list[str] = field(default_factory=list)  # only the report uses them (not compared on resume)

    def validate(self) -> None:
        if not self.domain or not self.general:
            raise LmkitError("adapt needs domain text (--domain) and general text (--general)")
        for p in [*self.domain, *self.general]:
            if not Path(p).expanduser().exists():
                raise LmkitError(f"{p}: no such file or folder")
        if not self.mixes and not self.continue_from:
            raise LmkitError(
                "--mixes: give at least one domain share, e.g. --mixes 0 0.5 1 (none only with "
                "--continue-from: then the experiment is that checkpoint and its DAPT arm)"
            )
        for m in self.mixes:
            if not 0.0 <= m <= 1.0:
                raise LmkitError(f"--mixes: a domain share is between 0 and 1, got {m:g}")
        if len({arm_name(m) for m in self.mixes}) != len(self.mixes):
            raise LmkitError(f"--mixes: the shares {self.mixes} repeat one (to two decimals)")
        if not 0.0 < self.heldout < 1.0:
            raise LmkitError(f"--heldout: the share held out is between 0 and 1 (exclusive), got {self.heldout:g}")
        if self.budget is not None and not self.budget > 0:
            raise LmkitError(f"--budget: FLOPs per arm must be positive, got {self.budget:g}")
        if self.mix_tokens is not None and self.mix_tokens < 1:
            raise LmkitError(f"--mix-tokens must be at least 1, got {self.mix_tokens}")
        self.tokenizer_vocab()

    def tokenizer_vocab(self) -> int:
        """The vocabulary of the three tokenizers (``--vocab-size``, else the base config's
        model.vocab_size), checked against what the trainer accepts so that a bad size fails before
        anything is written."""
        from lmkit.config import load_run_config
        from lmkit.tokenizer import MAX_VOCAB, MIN_VOCAB

        if self.vocab_size is not None:
            vocab, where = self.vocab_size, "--vocab-size"
        else:
            vocab = int(load_run_config(self.config).model.vocab_size)
            where = f"--config {self.config}: model.vocab_size"
        if not MIN_VOCAB <= vocab <= MAX_VOCAB:
            raise LmkitError(
                f"{where} is {vocab:,}: the tokenizers adapt trains have {MIN_VOCAB:,} to {MAX_VOCAB:,} (2**20) tokens"
            )
        return vocab


@dataclass
class Arm:
    """One model of the experiment: a mix share, the continued checkpoint (``dapt``) or it as is (``base``)."""

    name: str
    kind: str  # "mix" | "dapt" | "base"
    domain_share: float | None


def arm_name(share: float) -> str:
    return f"share-{share:.2f}"


def plan_arms(s: AdaptSettings) -> list[Arm]:
    """The arms, in report order: the mix shares ascending, then ``base`` and ``dapt``."""
    arms = [Arm(arm_name(m), "mix", float(m)) for m in sorted(s.mixes)]
    if s.continue_from:
        arms += [Arm("base", "base", None), Arm("dapt", "dapt", 1.0)]
    return arms


def texts_of(folder: Path) -> list[str]:
    from lmkit.data.read import iter_documents

    return [d.text for d in iter_documents([folder])]


def iter_texts(*folders: Path) -> Iterator[str]:
    from lmkit.data.read import iter_documents

    for d in iter_documents(list(folders)):
        yield d.text


# --------------------------------------------------------------------------- settings and resuming


def settings_record(s: AdaptSettings) -> dict[str, Any]:
    """What must be equal for a run to continue an experiment (all but ``terms``), JSON-comparable."""
    from lmkit.config import load_run_config
    from lmkit.config_io import to_dict
    from lmkit.data.prepare import inputs_fingerprint
    from lmkit.data.read import list_files

    rec = asdict(s)
    rec.pop("terms")
    rec["base_config"] = to_dict(load_run_config(s.config))
    for name in SETS:
        files = list_files(getattr(s, name))
        rec[f"{name}_inputs"] = inputs_fingerprint(files)
    if s.continue_from:
        from lmkit.models.checkpoint import load_meta, resolve_checkpoint

        ckpt = resolve_checkpoint(s.continue_from)
        rec["continue_from"] = str(ckpt.resolve())
        rec["continue_from_step"] = load_meta(ckpt).get("step")
    return dict(json.loads(json.dumps(rec, default=str)))


def is_adapt_folder(p: Path) -> bool:
    return (p / SETTINGS_FILE).is_file()


def open_experiment(s: AdaptSettings, out: Path, overwrite: bool) -> bool:
    """Start ``out`` or continue it; True when continuing an experiment with the same settings."""
    rec = settings_record(s)
    f = out / SETTINGS_FILE
    if f.is_file() and not overwrite:
        try:
            saved = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LmkitError(f"{f}: unreadable ({e}); choose another --out or pass --overwrite") from None
        if saved == rec:
            return True
        key = next((k for k in rec if saved.get(k) != rec[k]), next(iter(set(saved) - set(rec)), "?"))
        raise LmkitError(
            f"{out}: holds an adapt experiment with other settings ({key}: saved {saved.get(key)!r}, "
            f"now {rec.get(key)!r}); pass --overwrite to start it again, or choose another --out"
        )
    inputs = [*s.domain, *s.general, *([s.continue_from] if s.continue_from else [])]
    check_out_dir(out, overwrite, inputs, ours=[is_adapt_folder, OUTPUT_PATHS], kind="adapt experiment")
    if out.is_dir() and overwrite and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(f, rec)
    return False


# --------------------------------------------------------------------------- 3-4. one arm


def arm_config(s: AdaptSettings, arm: Arm, data: Path, tokenizer: Path | None, run: Path) -> Any:
    """The arm's RunConfig: the base config with this arm's data, tokenizer, folder and budget."""
    from lmkit.config import load_run_config

    overrides: dict[str, Any] = {"data.paths": [str(data)], "out": str(run)}
    if tokenizer is not None:
        overrides["data.tokenizer"] = str(tokenizer)
    cfg = load_run_config(s.config, overrides)
    if arm.kind == "dapt":
        from lmkit.models.checkpoint import load_model_config, resolve_checkpoint

        ckpt = resolve_checkpoint(str(s.continue_from))
        cfg.train.init = str(ckpt)
        cfg.model = load_model_config(ckpt)  # set here too, so that a resumed arm agrees with its saved run
        cfg.data.tokenizer = str(ckpt / "tokenizer.json")
    if s.budget is not None:
        cfg.train.max_flops = float(s.budget)
        cfg.train.max_steps = cfg.train.max_tokens = cfg.train.tokens_per_param = cfg.train.max_time = None
    return cfg


def heldout_bpb(model: Any, model_cfg: Any, tokenizer: Any, text_dir: Path, batch_size: int) -> dict[str, float]:
    """Loss and bits per byte of ``model`` on every full window of the held-out text in ``text_dir``."""
    from lmkit.infer.evaluate import evaluate_model, held_out

    found = held_out(text_dir, str(text_dir), tokenizer)
    assert found is not None  # a text folder always gives windows (or raises)
    ev = evaluate_model(model, model_cfg, found[0], tokenizer, batch_size, max_batches=10**9)
    return {"bits_per_byte": ev["bits_per_byte"], "loss": ev["loss"], "tokens": ev["tokens"]}


def evaluate_arm(ckpt: Path, out: Path, batch_size: int) -> dict[str, Any]:
    """Held-out domain and general bits per byte of a checkpoint."""
    from lmkit.config import model_config_from_dict
    from lmkit.models.checkpoint import load_model, load_tokenizer, read_config

    model_cfg = model_config_from_dict(read_config(ckpt)["model"])
    model, tok = load_model(ckpt), load_tokenizer(ckpt)
    return {name: heldout_bpb(model, model_cfg, tok, split_dir(out, "heldout", name), batch_size) for name in SETS}


def run_arm(
    s: AdaptSettings, arm: Arm, out: Path, mix_tokenizer: Path, mix_tokens: int, progress: bool
) -> dict[str, Any]:
    """Mix, train (or resume) and evaluate one arm; its ``result.json`` marks it done."""
    from lmkit.models.checkpoint import list_checkpoints, load_meta, resolve_checkpoint

    folder = out / "arms" / arm.name
    done = folder / "result.json"
    if done.is_file():
        return dict(json.loads(done.read_text(encoding="utf-8")))
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"name": arm.name, "kind": arm.kind, "domain_share": arm.domain_share}
    if arm.kind == "base":
        ckpt = resolve_checkpoint(str(s.continue_from))
        meta = load_meta(ckpt)
        result.update(
            tokenizer="checkpoint",
            run=None,
            checkpoint=str(ckpt),
            steps=0,
            tokens=0,
            flops=0.0,
            params=meta.get("params"),
            sources={},
            wall_time_s=0.0,
        )
    else:
        if arm.kind == "mix":
            data = mix_arm_data(s, arm, out, folder, mix_tokenizer, mix_tokens, progress)
            tokenizer: Path | None = mix_tokenizer
        else:
            data, tokenizer = split_dir(out, "train", "domain"), None
        run = folder / "run"
        cfg = arm_config(s, arm, data, tokenizer, run)
        from lmkit.train.loop import train

        resume = run.is_dir() and bool(list_checkpoints(run))
        if progress:
            print(f"lmkit adapt: arm {arm.name}: {'resuming' if resume else 'training'} in {run}", file=sys.stderr)
        summary = train(cfg, resume=resume, show_progress=progress)
        ckpt = Path(summary["checkpoint"])
        meta = load_meta(ckpt)
        result.update(
            tokenizer="mix" if arm.kind == "mix" else "checkpoint",
            run=str(run),
            checkpoint=str(ckpt),
            steps=meta["step"],
            tokens=meta["tokens"],
            flops=meta["flops"],
            params=meta["params"],
            sources=(meta.get("data") or {}).get("sources", {}),
            wall_time_s=summary["wall_time_s"],
        )
        write_card(ckpt, folder / "card.md")
    batch = _eval_batch(s)
    result.update(evaluate_arm(ckpt, out, batch))
    write_json_atomic(done, result)
    return result


def _eval_batch(s: AdaptSettings) -> int:
    from lmkit.config import load_run_config

    t = load_run_config(s.config).train
    return int(t.micro_batch_size or t.batch_size)


def mix_arm_data(
    s: AdaptSettings, arm: Arm, out: Path, folder: Path, tokenizer: Path, total: int, progress: bool
) -> Path:
    """The arm's training mix (``lmkit.data.mix``): ``total`` tokens, ``domain_share`` of them domain."""
    from lmkit.data.mix import MixSource, mix

    data = folder / "data"
    if (data / "report.json").is_file():
        return data
    for stale in folder.glob(".data.partial-*"):  # what a killed mix left
        shutil.rmtree(stale, ignore_errors=True)
    share = float(arm.domain_share or 0.0)
    sources = [
        MixSource(str(split_dir(out, "train", name)), w, name)
        for name, w in (("domain", share), ("general", 1.0 - share))
        if w > 0
    ]
    mix(sources, data, total, seed=s.seed, tokenizer=str(tokenizer), progress=progress)
    return data


def write_card(ckpt: Path, path: Path) -> None:
    """The arm's model card (its training section records the mix by source)."""
    from lmkit.ship.card.render import render_card

    text = render_card(ckpt, name=path.parent.name)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------- the experiment


def check_budget_time(s: AdaptSettings, yes: bool) -> None:
    """With a ``budget``, every trained arm (each mix, and DAPT) spends it: the experiment's time,
    predicted from all those FLOPs on the base config's device and precision, must pass
    ``lmkit.plan.measure.check_predicted_time`` (``yes`` for a long one) before anything is written."""
    if s.budget is None:
        return
    from lmkit.config import load_run_config
    from lmkit.plan.measure import check_predicted_time

    arms = len(s.mixes) + (1 if s.continue_from else 0)
    base = load_run_config(s.config).train
    check_predicted_time(
        arms * s.budget, yes, f"--budget {s.budget:g} for each of {arms} arms", base.device, base.precision
    )


def run_adapt(
    s: AdaptSettings, out: str | Path, overwrite: bool = False, progress: bool = True, yes: bool = False
) -> dict[str, Any]:
    """Run (or continue) the whole experiment in ``out``; returns the report (``adapt.json``).
    ``yes``: start it even when its ``budget`` makes it a long run (:func:`check_budget_time`)."""
    from lmkit.lab.adapt.report import data_table, write_report
    from lmkit.lab.adapt.tokenizers import tokenizer_table, train_adapt_tokenizers

    s.validate()
    check_budget_time(s, yes)
    out = Path(out).expanduser()
    resumed = open_experiment(s, out, overwrite)
    if progress:
        print(f"lmkit adapt: {'continuing' if resumed else 'starting'} the experiment in {out}", file=sys.stderr)
    split = make_split({"domain": s.domain, "general": s.general}, out, s.seed, s.heldout, s.text_field)
    vocab = s.tokenizer_vocab()
    tr = {n: split_dir(out, "train", n) for n in SETS}
    toks = train_adapt_tokenizers(
        {
            "domain": iter_texts(tr["domain"]),
            "general": iter_texts(tr["general"]),
            "mix": iter_texts(tr["domain"], tr["general"]),
        },
        vocab,
        out / "tokenizers",
        show_progress=False,
    )
    heldout_texts = {n: texts_of(split_dir(out, "heldout", n)) for n in SETS}
    table = tokenizer_table(toks, heldout_texts, s.terms)
    data = data_table(
        toks["mix"], {f"{n} {part}": split_dir(out, part, n) for part in ("train", "heldout") for n in SETS}
    )
    mix_tokens = s.mix_tokens or min(data["domain train"]["tokens"], data["general train"]["tokens"])
    mix_tok = out / "tokenizers" / "mix" / "tokenizer.json"
    arms = []
    for arm in plan_arms(s):
        arms.append(run_arm(s, arm, out, mix_tok, int(mix_tokens), progress))
    return write_report(out, s, split, data, table, arms, int(mix_tokens))


__all__ = [
    "AdaptSettings",
    "Arm",
    "OUTPUT_PATHS",
    "SETTINGS_FILE",
    "arm_name",
    "plan_arms",
    "settings_record",
    "open_experiment",
    "arm_config",
    "heldout_bpb",
    "evaluate_arm",
    "run_arm",
    "check_budget_time",
    "run_adapt",
]
