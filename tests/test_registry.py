"""The registry of families (lmkit.models.registry) and the protocols of what a model offers.

Every family builds from its entry; each spec agrees with its class (the capability protocol it
satisfies and no other, forward's inputs, the batch its objective makes, the tokens its loss
scores); every family has a row in lmkit.families and an entry in config's objectives; the HF
adapters of the specs are exactly hf.ADAPTERS. A family added as one more entry is picked up by code
that asks the spec (generation here), and branches on family names stay out of the code outside the
listed places.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path
from typing import get_args

import pytest
import torch

from lmkit.config import OBJECTIVES, Family, ModelConfig
from lmkit.errors import LmkitError
from lmkit.families import FAMILIES
from lmkit.infer.generate import generate_ids
from lmkit.infer.sampling import GenerationConfig
from lmkit.models import build_model
from lmkit.models.hf import ADAPTERS
from lmkit.models.protocols import CausalLM, MaskedLM, Model, Seq2SeqLM
from lmkit.models.registry import SPECS, FamilySpec, spec_of
from lmkit.objectives import IGNORE_INDEX, SpecialIds, make_batch, window_length
from lmkit.plan.compute import PLAN_TERMS, count_params, decoded_target_len, flops_per_token, plan_terms
from lmkit.plan.memory import kv_cache_bytes, training_memory

ROOT = Path(__file__).resolve().parent.parent / "src" / "lmkit"
CAPABILITIES = (CausalLM, MaskedLM, Seq2SeqLM)


def tiny(family: str) -> ModelConfig:
    return ModelConfig(
        family=family,  # type: ignore[arg-type]
        vocab_size=128,
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
        max_seq_len=32,
        max_target_len=16,
    )


def test_every_family_has_one_entry_a_row_and_objectives() -> None:
    names = set(get_args(Family))
    assert set(SPECS) == names
    assert {f.name for f in FAMILIES} == names
    assert set(OBJECTIVES) == names
    assert set(PLAN_TERMS) == names
    for name, spec in SPECS.items():
        assert spec.name == name and spec.row.name == name
        assert spec.plan is PLAN_TERMS[name] and spec.plan.family == name
        assert spec_of(name) is spec
    with pytest.raises(LmkitError, match="model.family must be one of encoder|decoder|encdec, got 'gpt'"):
        spec_of("gpt")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_family_builds_and_offers_its_capability_only(name: str) -> None:
    spec = SPECS[name]
    model = build_model(tiny(name))
    assert type(model) is spec.model_class
    assert isinstance(model, Model) and isinstance(model, spec.offers)
    assert [c for c in CAPABILITIES if isinstance(model, c)] == [spec.offers]
    assert spec.generates == hasattr(model, "new_cache")  # a family that writes text keeps a cache
    assert (spec.decodes == "seq2seq") == isinstance(model, Seq2SeqLM)
    assert (spec.decodes == "causal") == isinstance(model, CausalLM)
    # forward's leading parameters are the spec's inputs, in order
    params = list(inspect.signature(model.forward).parameters)
    assert params[: len(spec.inputs)] == list(spec.inputs)
    with pytest.raises(LmkitError, match="not"):
        spec.build(tiny(next(n for n in SPECS if n != name)))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_agrees_with_its_objectives_batch_and_loss(name: str) -> None:
    spec = SPECS[name]
    cfg = tiny(name)
    assert cfg.objective == spec.default_objective and spec.objectives == OBJECTIVES[name]
    specials = SpecialIds(pad=0, bos=1, eos=2, mask=3, sentinels=tuple(range(127, 100, -1)), vocab_size=128)
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(10, 100, (4, window_length(cfg)), generator=gen)
    batch = make_batch(cfg, windows, specials, gen)
    assert ("decoder_input_ids" in batch) == ("decoder_input_ids" in spec.inputs)
    assert set(batch) - {"labels"} <= set(spec.inputs)
    model = build_model(cfg)
    assert torch.isfinite(model.loss(batch))
    scored = (batch["labels"] != IGNORE_INDEX).sum(dim=1).float()  # per sequence
    predicted = spec.plan.predicted_tokens(cfg, cfg.max_seq_len)
    if spec.decodes == "causal":
        assert scored.tolist() == [predicted] * 4  # every position predicts the next token
    elif spec.decodes == "seq2seq":
        assert predicted == decoded_target_len(cfg, cfg.max_seq_len) <= cfg.max_target_len
        assert float(scored.max()) <= predicted
    else:
        assert predicted == round(0.15 * cfg.max_seq_len)
        assert abs(float(scored.mean()) - predicted) <= 0.5 * predicted + 1  # 15% chosen at random


def test_adapters_come_from_the_hf_registry() -> None:
    assert sorted(a.target.architecture for s in SPECS.values() for a in s.adapters) == sorted(
        a.target.architecture for a in ADAPTERS
    )
    for spec in SPECS.values():
        assert spec.adapters, f"{spec.name} has no Hugging Face class"
        for a in spec.adapters:
            assert a.target.family == spec.name
            assert a.target.auto_class == spec.auto_class and a.target.pipeline_tag == spec.pipeline_tag


def test_a_family_added_as_one_entry_is_used_by_code_that_asks_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new family reusing the decoder's class: registering it is the only change generation needs."""
    twin = dataclasses.replace(SPECS["decoder"], name="decoder-twin")  # type: ignore[arg-type]
    monkeypatch.setitem(SPECS, "decoder-twin", twin)
    model = build_model(tiny("decoder"))
    model.cfg = dataclasses.replace(model.cfg)
    object.__setattr__(model.cfg, "family", "decoder-twin")
    assert spec_of("decoder-twin") is twin
    out = generate_ids(model, torch.tensor([[5, 6, 7]]), GenerationConfig(max_new_tokens=3), eos_id=None)
    assert out.shape == (1, 6)
    gone = dataclasses.replace(twin, decodes="none")
    monkeypatch.setitem(SPECS, "decoder-twin", gone)
    with pytest.raises(LmkitError, match="decoder-twin models do not generate text"):
        generate_ids(model, torch.tensor([[5, 6, 7]]), GenerationConfig(max_new_tokens=3))


def test_a_family_added_to_the_plan_table_is_planned_like_its_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    """plan/ tells the families apart in PLAN_TERMS alone: an entry there is all a family's plan needs."""
    twin = dataclasses.replace(PLAN_TERMS["encdec"], family="encdec-twin")
    monkeypatch.setitem(PLAN_TERMS, "encdec-twin", twin)
    cfg = tiny("encdec")
    other = dataclasses.replace(cfg)
    object.__setattr__(other, "family", "encdec-twin")
    assert count_params(other) == count_params(cfg)
    assert flops_per_token(other, 24) == flops_per_token(cfg, 24)
    assert training_memory(other, micro_batch=3, optimizer="muon") == training_memory(
        cfg, micro_batch=3, optimizer="muon"
    )
    assert kv_cache_bytes(other, 2, 20) == kv_cache_bytes(cfg, 2, 20) > 0
    with pytest.raises(
        LmkitError, match=re.escape("model.family must be one of encoder|decoder|encdec|encdec-twin, got 'gpt'")
    ):
        plan_terms("gpt")


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPECS["decoder"].decodes = "none"  # type: ignore[misc]
    assert all(isinstance(s, FamilySpec) for s in SPECS.values())


# --------------------------------------------------------------------------- no family branches

# Where a comparison of a family with a family's name may still stand, and how many (a ceiling):
# the deliberate exceptions, each one family's own rule. serve/ and lab/ ask the spec (decodes,
# generates, offers); plan/ is pure (it cannot import the registry) and tells the families apart in
# one table only (lmkit.plan.compute.PLAN_TERMS, a dict lookup, not a comparison).
ALLOWED_BRANCHES: dict[str, int] = {
    # the ground floor, below models/ (it cannot import the registry either): each family's config rules
    "config.py": 1,  # a decoder's gated MLP default width
    "model_variants.py": 7,  # which variant fields each family may set, and the encoder-decoder's defaults
    "models/hf.py": 1,  # an encoder's own reason no class fits (lmkit.models.encoder.hf_architecture)
    "ship/config_from_hf.py": 2,  # which fields a family's transformers config keeps
    "ship/import_hf.py": 1,  # T5/BART's missing untied head is the shared embedding
    "ship/card/describe.py": 3,  # T5's position buckets, the variants an encoder lacks, a decoder's own fields
    "ship/export_gguf.py": 1,  # GGUF is for decoders (llama.cpp's layouts); being written: to ask the spec
}


def _family_branches(path: Path) -> int:
    names = set(SPECS)
    n = 0
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        consts = [
            c.value
            for s in sides
            for c in ([s] if isinstance(s, ast.Constant) else s.elts if isinstance(s, (ast.Tuple, ast.List)) else [])
            if isinstance(c, ast.Constant)
        ]
        other = [s for s in sides if not isinstance(s, (ast.Constant, ast.Tuple, ast.List))]
        family_like = any(
            (isinstance(s, ast.Attribute) and s.attr == "family")
            or (isinstance(s, ast.Name) and s.id in ("family", "fam"))
            for s in other
        )
        if family_like and any(c in names for c in consts):
            n += 1
    return n


def test_family_names_are_asked_of_the_registry_not_branched_on() -> None:
    found: dict[str, int] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        n = _family_branches(path)
        if n:
            key = next((k for k in ALLOWED_BRANCHES if k.endswith("/") and rel.startswith(k)), rel)
            found[key] = found.get(key, 0) + n
    over = {k: n for k, n in found.items() if n > ALLOWED_BRANCHES.get(k, 0)}
    assert not over, f"family == '...' branches (ask lmkit.models.registry.spec_of instead): {over}"
    stale = {k: n for k, n in ALLOWED_BRANCHES.items() if found.get(k, 0) < n}
    assert not stale, f"fewer family branches than allowed: lower the ceilings {stale} to {found}"
