"""Chinchilla, as pure functions: the 20-tokens-per-parameter rule, the parametric loss fits
L(N, D) = E + A/N^α + B/D^β and their compute-optimal frontier, the verdict on a model's
tokens per parameter, well-known models, and a plausible shape for a bare parameter count.

Imports nothing from lmkit except ``lmkit.config``, ``lmkit.errors`` and ``lmkit.plan.compute``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.plan.compute import pf_days, training_flops

TOKENS_PER_PARAM = 20.0  # Chinchilla's rule of thumb
# A model is "about right" when its tokens/parameter ratio is within a factor 2 of 20 (10..40),
# which is the same as its size being within a factor √2 of the rule's compute-optimal size for the
# compute it used (N/N_opt = sqrt(20/ratio) when C = 6ND is held fixed).
ABOUT_RIGHT_BAND = (10.0, 40.0)
LAW_EXPONENT_RANGE = (0.01, 10.0)  # α and β of a law lmkit plans with (published fits: 0.28 to 0.37)


def shape_for_params(params: float, vocab_size: int = 32000, seq_len: int = 2048) -> ModelConfig:
    """A plausible Llama-like decoder shape of about ``params`` parameters (for memory estimates
    when only a parameter count is given): d_model ≈ 100 · n_layers (GPT-3 and Llama use 64-128),
    d_model a multiple of 128, heads of 128 dimensions, SwiGLU of 8/3 · d_model."""
    n = float(params)
    if n <= 0:
        raise LmkitError(f"parameters must be positive, got {params}")
    lo, hi = 1.0, 1e6  # solve 0.12·d³ + V·d = n for d
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.12 * mid**3 + vocab_size * mid < n else (lo, mid)
    d = max(128, round(lo / 128) * 128)
    layers = max(1, round((n - vocab_size * d) / (12 * d * d)))
    return ModelConfig(
        family="decoder",
        vocab_size=vocab_size,
        d_model=d,
        n_layers=layers,
        n_heads=max(1, d // 128),
        max_seq_len=seq_len,
    )


# =========================================================================== Chinchilla


@dataclass(frozen=True)
class ScalingFit:
    """A parametric loss fit L(N, D) = E + A/N^α + B/D^β and its compute-optimal frontier."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def loss(self, params: float, tokens: float) -> float:
        total = (
            self.E
            + self._exp(math.log(self.A) - self.alpha * math.log(params), f"A/N^α at {params:.3g}")
            + self._exp(math.log(self.B) - self.beta * math.log(tokens), f"B/D^β at {tokens:.3g}")
        )
        return total if math.isfinite(total) else self._exp(math.inf, "the loss")

    @property
    def log_G(self) -> float:
        """log G, G = (αA/(βB))^(1/(α+β)): the frontier's figures are computed in logs, so a law
        with extreme coefficients says so in one line (``_exp``) instead of overflowing."""
        return (math.log(self.alpha * self.A) - math.log(self.beta * self.B)) / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return self._exp(self.log_G, "G")

    def optimal(self, flops: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising the loss under C = 6ND:
        N_opt = G·(C/6)^(β/(α+β)), D_opt = (C/6)/N_opt, G = (αA/(βB))^(1/(α+β))."""
        log_c6 = math.log(float(flops) / 6.0)
        log_n = self.log_G + log_c6 * self.beta / (self.alpha + self.beta)
        at = f"for {flops:.3g} FLOPs"
        return self._exp(log_n, f"N_opt {at}"), self._exp(log_c6 - log_n, f"D_opt {at}")

    def optimal_params(self, tokens: float) -> float:
        """Parameters N for which ``tokens`` is compute-optimal: D_opt = (C/6)^(α/(α+β)) / G solved
        for C/6, then N = (C/6) / D."""
        log_d = math.log(float(tokens))
        log_c6 = (log_d + self.log_G) * (self.alpha + self.beta) / self.alpha
        return self._exp(log_c6 - log_d, f"the compute-optimal size for {tokens:.3g} tokens")

    def optimal_tokens(self, params: float) -> float:
        """Tokens D for which a model of ``params`` parameters is compute-optimal (inverts N_opt)."""
        log_n = math.log(float(params))
        log_c6 = (log_n - self.log_G) * (self.alpha + self.beta) / self.beta
        return self._exp(log_c6 - log_n, f"the compute-optimal tokens for {params:.3g} parameters")

    def _exp(self, log_value: float, what: str) -> float:
        """e^log_value, or one line saying this law puts ``what`` beyond any number a float holds."""
        if not abs(log_value) <= 700:
            raise LmkitError(
                f"the scaling law {self.name} puts {what} at e^{log_value:.4g}, beyond any float "
                f"(E {self.E:.4g}, A {self.A:.4g}, B {self.B:.4g}, alpha {self.alpha:.4g}, beta "
                f"{self.beta:.4g}): a smaller input, or a law with exponents nearer 0.3"
            )
        return math.exp(log_value)


FITS: dict[str, ScalingFit] = {
    "chinchilla": ScalingFit(
        "chinchilla",
        E=1.69337,
        A=406.401,
        B=410.723,
        alpha=0.33917,
        beta=0.28491,
        source="Hoffmann et al. 2022, approach 3 (unrounded coefficients)",
    ),
    "epoch": ScalingFit(
        "epoch",
        E=1.8172,
        A=482.01,
        B=2085.43,
        alpha=0.3478,
        beta=0.3658,
        source="Besiroglu et al. 2024 (Epoch AI's replication of approach 3)",
    ),
}


def get_fit(name: str | ScalingFit) -> ScalingFit:
    if isinstance(name, ScalingFit):  # a law the user fitted (load_scaling_law)
        return name
    try:
        return FITS[name]
    except KeyError:
        raise LmkitError(f"unknown scaling fit {name!r} (known: {', '.join(FITS)})") from None


def load_scaling_law(path: str) -> ScalingFit:
    """The Approach-3 law of an ``lmkit scale fit`` output (its fit.json) as a ScalingFit."""
    import json
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LmkitError(f"{path}: cannot read a scaling-law fit ({e})") from None
    a3: Any = data.get("approach3") if isinstance(data, dict) else None
    law: Any = a3.get("law") if isinstance(a3, dict) else None
    if isinstance(a3, dict) and a3.get("skipped"):
        raise LmkitError(f"{path}: has no Approach-3 law: the fit skipped it ({a3['skipped']})")
    nulls = [k for k in ("E", "A", "B", "alpha", "beta") if isinstance(law, dict) and k in law and law[k] is None]
    if nulls:
        raise LmkitError(
            f"{path}: its Approach-3 law has no value for {', '.join(nulls)} (null); refit with "
            "lmkit scale fit --approach 3"
        )
    try:
        fit = ScalingFit(
            f"scale fit ({Path(path).name})",
            E=float(law["E"]),
            A=float(law["A"]),
            B=float(law["B"]),
            alpha=float(law["alpha"]),
            beta=float(law["beta"]),
            source=f"lmkit scale fit of {data.get('points', '?')} (approach 3)",
        )
    except (TypeError, KeyError, ValueError):
        raise LmkitError(
            f"{path}: has no Approach-3 law (approach3.law with E, A, B, alpha, beta); "
            "refit with lmkit scale fit --approach 3"
        ) from None
    bad = [k for k in ("A", "B", "alpha", "beta") if not (math.isfinite(getattr(fit, k)) and getattr(fit, k) > 0)]
    if bad or not (math.isfinite(fit.E) and fit.E >= 0):
        raise LmkitError(
            f"{path}: its law has no compute-optimal frontier ({', '.join(bad or ['E'])} must be a "
            "finite number above 0, E at least 0)"
        )
    lo, hi = LAW_EXPONENT_RANGE
    for k in ("alpha", "beta"):
        if not lo <= getattr(fit, k) <= hi:
            raise LmkitError(
                f"{path}: its law's {k} {getattr(fit, k):.4g} is outside {lo:g} to {hi:g} (fits of "
                "real runs give about 0.3): these points did not identify it"
            )
    return fit


def rule_optimal(flops: float, tokens_per_param: float = TOKENS_PER_PARAM) -> tuple[float, float]:
    """(N, D) with D = 20·N and 6·N·D = C: N = sqrt(C / 120)."""
    n = math.sqrt(float(flops) / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


def verdict(params: float, tokens: float, optimal_ratio: float = TOKENS_PER_PARAM) -> str:
    """under-trained (over-parameterised) / about right / over-trained, against 20 tokens/parameter
    with the band ``ABOUT_RIGHT_BAND`` (10..40 tokens per parameter); against another compute-optimal
    ratio (a law the user fitted) the band is scaled with it (a factor 2 either side)."""
    ratio = float(tokens) / float(params) * TOKENS_PER_PARAM / float(optimal_ratio)
    if ratio < ABOUT_RIGHT_BAND[0]:
        return "under-trained (over-parameterised)"
    if ratio > ABOUT_RIGHT_BAND[1]:
        return "over-trained (small for its compute)"
    return "about right"


@dataclass(frozen=True)
class KnownModel:
    name: str
    params: float
    tokens: float
    source: str


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("GPT-3", 175e9, 300e9, "Brown et al. 2020"),
    KnownModel("Jurassic-1", 178e9, 300e9, "Lieber et al. 2021"),
    KnownModel("Gopher", 280e9, 300e9, "Rae et al. 2021"),
    KnownModel("MT-NLG", 530e9, 270e9, "Smith et al. 2022"),
    KnownModel("LaMDA", 137e9, 168e9, "Thoppilan et al. 2022 (as tabulated by Hoffmann et al.)"),
    KnownModel("Chinchilla", 70e9, 1.4e12, "Hoffmann et al. 2022"),
    KnownModel("PaLM", 540e9, 780e9, "Chowdhery et al. 2022"),
    KnownModel("OPT-175B", 175e9, 180e9, "Zhang et al. 2022"),
    KnownModel("BLOOM", 176e9, 366e9, "BigScience 2022"),
    KnownModel("LLaMA 7B", 6.7e9, 1.0e12, "Touvron et al. 2023"),
    KnownModel("LLaMA 65B", 65.2e9, 1.4e12, "Touvron et al. 2023"),
    KnownModel("BloombergGPT", 50.6e9, 569e9, "Wu et al. 2023"),
    KnownModel("Llama 2 7B", 6.7e9, 2.0e12, "Touvron et al. 2023b"),
    KnownModel("Llama 2 70B", 70e9, 2.0e12, "Touvron et al. 2023b"),
    KnownModel("Llama 3 8B", 8.0e9, 15e12, 'Meta 2024 ("over 15T tokens")'),
    KnownModel("Llama 3 70B", 70.6e9, 15e12, 'Meta 2024 ("over 15T tokens")'),
)


def known_models_table(fit: str | ScalingFit = "chinchilla") -> list[dict[str, Any]]:
    """Each well-known model with its compute (6ND), tokens/parameter, the rule's compute-optimal
    size for that compute, and its verdict."""
    f = get_fit(fit)
    rows = []
    for m in KNOWN_MODELS:
        c = training_flops(m.params, m.tokens)
        n_rule, _ = rule_optimal(c)
        n_fit, _ = f.optimal(c)
        rows.append(
            {
                "name": m.name,
                "params": m.params,
                "tokens": m.tokens,
                "flops": c,
                "pf_days": pf_days(c),
                "tokens_per_param": m.tokens / m.params,
                "rule_optimal_params": n_rule,
                "fit_optimal_params": n_fit,
                "verdict": verdict(m.params, m.tokens),
                "source": m.source,
            }
        )
    return rows


__all__ = [
    "ABOUT_RIGHT_BAND",
    "FITS",
    "LAW_EXPONENT_RANGE",
    "KNOWN_MODELS",
    "TOKENS_PER_PARAM",
    "KnownModel",
    "ScalingFit",
    "get_fit",
    "known_models_table",
    "load_scaling_law",
    "rule_optimal",
    "shape_for_params",
    "verdict",
]
