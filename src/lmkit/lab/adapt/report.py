"""The report of ``lmkit adapt``: ``adapt.json``, ``report.md`` and ``tradeoff.png``.

What this module owns: the data table (documents, characters, bytes, tokens and characters per
token of each source, as BloombergGPT's Table 1), the bits-per-byte table of the arms, the three
checks the experiment is about (domain bits per byte fall as the domain share rises, general bits
per byte rise, the domain tokenizer needs fewer tokens on domain text than the general one) and
the trade-off plot: domain against general bits per byte, one point per arm, and both against the
domain share. Everything here is computed from the saved results, so a resumed experiment writes
the same report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmkit.fertility import fertility
from lmkit.files import write_json_atomic
from lmkit.lab.adapt.split import describe
from lmkit.lab.adapt.tokenizers import tokenizer_markdown
from lmkit.tokenizer import Tokenizer


def data_table(tok: Tokenizer, folders: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Per source (``"domain train"``, ...): documents, chars, bytes, tokens and chars per token with ``tok``."""
    from lmkit.data.read import iter_documents

    out = {}
    for name, folder in folders.items():
        f = fertility(tok, (d.text for d in iter_documents([folder])))
        out[name] = {
            k: f[k] for k in ("documents", "chars", "bytes", "words", "tokens", "chars_per_token", "bytes_per_token")
        }
    return out


def monotone(values: Sequence[float], falling: bool) -> bool:
    """Whether ``values`` fall (``falling``) or rise strictly from each to the next."""
    pairs = list(zip(values, values[1:]))
    return all(b < a for a, b in pairs) if falling else all(b > a for a, b in pairs)


def checks(arms: Sequence[Mapping[str, Any]], tok_table: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment's three findings as booleans (None where not measurable)."""
    mixes = sorted((a for a in arms if a["kind"] == "mix"), key=lambda a: a["domain_share"])
    dom = [a["domain"]["bits_per_byte"] for a in mixes]
    gen = [a["general"]["bits_per_byte"] for a in mixes]
    fert = tok_table["fertility"]
    tok_ok = None
    if "domain" in fert and "general" in fert:
        tok_ok = fert["domain"]["domain"]["tokens_per_word"] < fert["general"]["domain"]["tokens_per_word"]
    return {
        "domain_bpb_falls_with_share": monotone(dom, True) if len(dom) > 1 else None,
        "general_bpb_rises_with_share": monotone(gen, False) if len(gen) > 1 else None,
        "domain_tokenizer_lower_fertility_on_domain": tok_ok,
    }


def build_report(
    settings: Any,
    split: Mapping[str, Any],
    data: Mapping[str, Any],
    tok_table: Mapping[str, Any],
    arms: Sequence[Mapping[str, Any]],
    mix_tokens: int,
) -> dict[str, Any]:
    from lmkit import __version__

    return {
        "lmkit_version": __version__,
        "settings": asdict(settings),
        "split": dict(split),
        "mix_tokens": mix_tokens,
        "data": dict(data),
        "tokenizers": dict(tok_table),
        "arms": [dict(a) for a in arms],
        "checks": checks(arms, tok_table),
        "files": {"report": "report.md", "json": "adapt.json", "plot": "tradeoff.png"},
    }


def write_report(
    out: Path,
    settings: Any,
    split: Mapping[str, Any],
    data: Mapping[str, Any],
    tok_table: Mapping[str, Any],
    arms: Sequence[Mapping[str, Any]],
    mix_tokens: int,
) -> dict[str, Any]:
    """Write adapt.json, report.md and tradeoff.png into ``out``; return the report."""
    report = build_report(settings, split, data, tok_table, arms, mix_tokens)
    plot_tradeoff(report["arms"], out / "tradeoff.png")
    write_json_atomic(out / "adapt.json", report)
    tmp = out / ".report.md.tmp"
    tmp.write_text(report_markdown(report), encoding="utf-8")
    tmp.replace(out / "report.md")
    return report


# --------------------------------------------------------------------------- Markdown


def _si(x: float) -> str:
    for unit, v in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= v:
            return f"{x / v:.3g}{unit}"
    return f"{x:.3g}"


def data_markdown(data: Mapping[str, Any], mix_tokens: int) -> list[str]:
    lines = [
        "## Data",
        "",
        "Tokens counted with the mix tokenizer (the one every mix arm trains with). Held-out text is split "
        "off first and never trained on.",
        "",
        "| source | documents | characters | tokens | chars/token |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in data.items():
        cpt = f"{r['chars_per_token']:.2f}" if r["chars_per_token"] else "n/a"
        lines.append(f"| {name} | {r['documents']:,} | {r['chars']:,} | {r['tokens']:,} | {cpt} |")
    return lines + [
        "",
        f"Every mix holds {mix_tokens:,} tokens (domain share x that from the domain, the rest "
        "general), so the arms differ in their mix only.",
        "",
    ]


def arms_markdown(arms: Sequence[Mapping[str, Any]]) -> list[str]:
    ref = next((a for a in arms if a["kind"] == "mix" and a["domain_share"] == 0.0), None)
    lines = [
        "## Models",
        "",
        "Held-out bits per byte (lower is better; comparable across tokenizers). Δ is against the "
        "general-only arm (share 0)."
        if ref
        else "Held-out bits per byte (lower is better).",
        "",
        "| arm | domain share | tokenizer | steps | tokens | FLOPs | domain bpb | general bpb |"
        + (" Δ domain | Δ general |" if ref else ""),
        "|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if ref else ""),
    ]
    for a in arms:
        share = "—" if a["domain_share"] is None else f"{a['domain_share']:.2f}"
        d, g = a["domain"]["bits_per_byte"], a["general"]["bits_per_byte"]
        row = (
            f"| {a['name']} | {share} | {a['tokenizer']} | {a['steps']:,} | {a['tokens']:,} | "
            f"{_si(a['flops']) if a['flops'] else '0'} | {d:.4f} | {g:.4f} |"
        )
        if ref:
            row += f" {d - ref['domain']['bits_per_byte']:+.4f} | {g - ref['general']['bits_per_byte']:+.4f} |"
        lines.append(row)
    return lines + [""]


CHECK_TEXT = {
    "domain_bpb_falls_with_share": "domain bits per byte fall at every step up in domain share",
    "general_bpb_rises_with_share": "general bits per byte rise at every step up in domain share",
    "domain_tokenizer_lower_fertility_on_domain": "the domain tokenizer needs fewer tokens per word on held-out "
    "domain text than the general tokenizer",
}


def report_markdown(r: Mapping[str, Any]) -> str:
    s = r["settings"]
    lines = [
        "# Domain adaptation",
        "",
        f"Domain: {', '.join(f'`{p}`' for p in s['domain'])}; general: "
        f"{', '.join(f'`{p}`' for p in s['general'])}; base config `{s['config']}`; "
        + (f"budget {_si(s['budget'])} FLOPs per arm; " if s["budget"] else "the base config's stop condition; ")
        + f"{100 * s['heldout']:g}% of each set held out (seed {s['seed']}).",
        "",
        "Held-out split:",
        "",
    ]
    lines += [f"- {line}" for line in describe(r["split"])] + [""]
    lines += data_markdown(r["data"], r["mix_tokens"])
    lines += tokenizer_markdown(r["tokenizers"])
    lines += arms_markdown(r["arms"])
    lines += ["## Findings", ""]
    for k, v in r["checks"].items():
        mark = "n/a" if v is None else ("yes" if v else "no")
        lines.append(f"- {CHECK_TEXT[k]}: **{mark}**")
    lines += ["", "![trade-off](tradeoff.png)", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the plot


def plot_tradeoff(arms: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Left: domain against general bpb, one point per arm. Right: both against the domain share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for a in arms:
        x, y = a["general"]["bits_per_byte"], a["domain"]["bits_per_byte"]
        marker = {"mix": "o", "dapt": "s", "base": "^"}[a["kind"]]
        ax1.scatter([x], [y], marker=marker, s=50, color="C0" if a["kind"] == "mix" else "C3", zorder=3)
        ax1.annotate(a["name"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax1.set_xlabel("general held-out bits per byte")
    ax1.set_ylabel("domain held-out bits per byte")
    ax1.set_title("trade-off: one point per arm (lower-left is better)")
    ax1.grid(alpha=0.3)
    mixes = sorted((a for a in arms if a["kind"] == "mix"), key=lambda a: a["domain_share"])
    shares = [a["domain_share"] for a in mixes]
    ax2.plot(shares, [a["domain"]["bits_per_byte"] for a in mixes], "o-", color="C1", label="domain held-out")
    ax2.plot(shares, [a["general"]["bits_per_byte"] for a in mixes], "o-", color="C2", label="general held-out")
    for a in arms:
        if a["kind"] == "dapt":
            ax2.scatter(
                [1.0],
                [a["domain"]["bits_per_byte"]],
                marker="s",
                color="C1",
                facecolors="none",
                s=60,
                label="DAPT, domain",
            )
            ax2.scatter(
                [1.0],
                [a["general"]["bits_per_byte"]],
                marker="s",
                color="C2",
                facecolors="none",
                s=60,
                label="DAPT, general",
            )
    ax2.set_xlabel("domain share of the training mix")
    ax2.set_ylabel("held-out bits per byte")
    ax2.set_title("bits per byte against domain share")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


__all__ = ["data_table", "monotone", "checks", "build_report", "write_report", "report_markdown", "plot_tradeoff"]
