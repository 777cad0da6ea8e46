"""What the type checker sees: ``make test`` runs ``mypy`` over pyproject.toml's ``[tool.mypy] files``,
which must name the model code and everything that runs it, not only the pure modules; and
``lmkit.models.LanguageModel``, the type those modules give a model, must hold every family's class."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from lmkit.config import ModelConfig
from lmkit.families import FAMILIES
from lmkit.models import LanguageModel, build_model

REPO = Path(__file__).resolve().parent.parent
CHECKED = ("models", "train", "infer", "serve", "ship", "lab", "plan", "numerics.py", "objectives.py", "config.py")


def test_mypy_checks_the_model_code_and_what_runs_it() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    missing = [name for name in CHECKED if f"src/lmkit/{name}" not in files]
    assert not missing, f"[tool.mypy] files leaves out {missing}"
    gone = [f for f in files if not (REPO / f).exists()]
    assert not gone, f"[tool.mypy] files names paths that do not exist: {gone}"


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_language_model_holds_the_class_of_every_family(family: str) -> None:
    cfg = ModelConfig(
        family=family,
        vocab_size=64,
        d_model=16,
        n_layers=1,
        n_heads=2,  # type: ignore[arg-type]
        max_seq_len=8,
    )
    model = build_model(cfg)
    assert type(model) in typing.get_args(LanguageModel)
    assert model.cfg.family == family
