"""The ``adapt`` command: domain adaptation measured as BloombergGPT did (flags, runner, printing).

The experiment itself is :mod:`lmkit.lab.adapt.experiment`; it loads only when the command runs, so
``lmkit --help`` stays instant.
"""

from __future__ import annotations

import argparse
from typing import Any

from lmkit.cli.common import (
    add_json,
    add_out,
    add_overwrite,
    add_quiet,
    add_run_config,
    add_seed,
    add_text_field,
    add_yes,
    print_json,
)

DESCRIPTION = """\
Does domain text in the training mix, a domain tokenizer, or continued pre-training help on your
domain (law, finance, medicine), and what does it cost on general text? This runs the experiment
BloombergGPT reported (51% financial + 49% public text) on your own text, at the size you choose.

What it does, in order (every step is saved in --out; run the same command again to continue a
killed experiment: finished arms are kept, a half-trained one resumes from its last checkpoint,
and the report comes out the same):
  1. held-out split first: --heldout of each set's documents (by a seeded hash of the text) are
     set aside and never trained on, by tokenizers or models; a set with too few documents for
     that (one big file) holds out the closing paragraphs of each document instead (the report
     says which rule each set got);
  2. tokenizers: one trained on the domain text, one on the general text, one on both (the mix);
     their fertility (tokens per word, tokens per byte) on held-out domain and general text, how
     each cuts your --terms, and how much of their vocabularies they share (BloombergGPT Table 3);
  3. models: one per domain share in --mixes, each a normal `lmkit pretrain` run of --config on a
     mix (`lmkit mix`) of the same number of tokens, with the mix tokenizer, the same seed and the
     same budget (--budget FLOPs, else the config's stop condition); its card records the mix.
     With --continue-from CKPT, two more arms: that checkpoint as it is (base) and it pre-trained
     further on the domain text at the same budget (dapt, "Don't Stop Pretraining");
  4. report: held-out domain and general bits per byte of every arm side by side (bits per byte,
     not perplexity, so that tokenizers compare fairly), the data table (tokens and characters per
     token per source), the trade-off plot (domain against general bits per byte, one point per
     arm; and both against the domain share): report.md, adapt.json, tradeoff.png.

Concepts: fertility is how many tokens a word costs (a tokenizer that knows the domain cuts
"estoppel" into fewer pieces); bits per byte = the model's total surprise in bits over the UTF-8
bytes of the text, the same yardstick whatever the tokenizer.

examples:
  lmkit adapt --domain legal/ --general web/ --config tiny --out runs/adapt
  lmkit adapt --domain legal/ --general web/ --config tiny --mixes 0 0.5 1 --budget 2e10 \\
      --terms "mens rea" "res judicata" --out runs/adapt-legal
  lmkit adapt --domain legal/ --general web/ --config tiny --mixes \\
      --continue-from runs/adapt/arms/share-0.00/run --out runs/adapt-dapt  base + DAPT only
(tiny trains in seconds; use cpu-small, gpu-124m or your own YAML for figures worth reading)"""


def add_adapt(sub: Any) -> None:
    p = sub.add_parser(
        "adapt",
        help="domain adaptation: mix shares, domain tokenizer, continued pre-training, measured in bits per byte",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--domain",
        nargs="+",
        required=True,
        metavar="PATH",
        help="domain text: files or folders (text, JSONL, curated shards, Parquet)",
    )
    p.add_argument("--general", nargs="+", required=True, metavar="PATH", help="general text, the same formats")
    add_run_config(p, "base run config of every arm", required=True)
    p.add_argument(
        "--mixes",
        nargs="*",
        type=float,
        default=[0.0, 0.25, 0.5, 1.0],
        metavar="SHARE",
        help="domain shares of the training mix, one model each (default 0 0.25 0.5 1; none with "
        "--continue-from compares that checkpoint with its DAPT arm only)",
    )
    p.add_argument(
        "--continue-from",
        default=None,
        metavar="CKPT",
        help="a pre-trained checkpoint (or run folder): adds it as is (base) and it pre-trained further "
        "on the domain text (dapt)",
    )
    p.add_argument(
        "--budget",
        default=None,
        metavar="FLOPS",
        help="training FLOPs of every arm, e.g. 2e14 or 200T (default: the config's stop condition)",
    )
    p.add_argument(
        "--terms",
        nargs="+",
        default=[],
        metavar="TERM",
        help='domain terms whose splits the tokenizer table shows, e.g. "mens rea" "res judicata"',
    )
    p.add_argument(
        "--heldout",
        type=float,
        default=0.1,
        help="share of each set held out for evaluation: of its documents, or of each document's "
        "text when the set has too few documents (default 0.1)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="vocabulary of the three tokenizers (default: the config's model.vocab_size)",
    )
    p.add_argument(
        "--mix-tokens",
        default=None,
        metavar="N",
        help="tokens in every mix (default: the smaller training set's, so no mix repeats data)",
    )
    add_seed(p, 0, "the held-out split and the mixes")
    add_text_field(p)
    add_out(
        p, "experiment folder, continued when it holds the same experiment (default runs/adapt)", default="runs/adapt"
    )
    add_overwrite(p, "a previous adapt experiment in --out: start again")
    add_yes(p, "the experiment", "with --budget: predicted from every arm's FLOPs at this machine's measured peak")
    add_quiet(p)
    add_json(p, "adapt.json")
    p.set_defaults(func=_run_adapt)


def _run_adapt(args: argparse.Namespace) -> int:
    """``lmkit adapt``: run or continue the experiment, then print its tables."""
    from lmkit.lab.adapt.experiment import AdaptSettings, run_adapt
    from lmkit.plan.units import parse_count

    s = AdaptSettings(
        domain=list(args.domain),
        general=list(args.general),
        config=args.config,
        mixes=[float(m) for m in args.mixes],
        continue_from=args.continue_from,
        budget=parse_count(args.budget, "--budget") if args.budget else None,
        heldout=args.heldout,
        vocab_size=args.vocab_size,
        mix_tokens=int(parse_count(args.mix_tokens, "--mix-tokens")) if args.mix_tokens else None,
        seed=args.seed,
        text_field=args.text_field,
        terms=list(args.terms),
    )
    report = run_adapt(s, args.out, overwrite=args.overwrite, progress=not args.quiet and not args.json, yes=args.yes)
    if args.json:
        print_json(report)
    else:
        print(format_adapt(report, args.out))
    return 0


def format_adapt(r: dict[str, Any], out: str) -> str:
    """The bits-per-byte table, the tokenizer fertility and the findings, for the terminal."""
    from lmkit.lab.adapt.report import CHECK_TEXT
    from lmkit.lab.adapt.split import describe

    lines = ["held-out split: " + line for line in describe(r["split"])] + [""]
    lines.append(f"{'arm':<12} {'share':>5} {'steps':>6} {'domain bpb':>10} {'general bpb':>11}")
    for a in r["arms"]:
        share = "-" if a["domain_share"] is None else f"{a['domain_share']:.2f}"
        lines.append(
            f"{a['name']:<12} {share:>5} {a['steps']:>6} {a['domain']['bits_per_byte']:>10.4f} "
            f"{a['general']['bits_per_byte']:>11.4f}"
        )
    lines += ["", f"{'tokenizer':<10} {'tokens/word on domain':>22} {'on general':>11}"]
    for name, rows in r["tokenizers"]["fertility"].items():
        lines.append(
            f"{name:<10} {rows['domain']['tokens_per_word']:>22.3f} {rows['general']['tokens_per_word']:>11.3f}"
        )
    lines.append("")
    for k, v in r["checks"].items():
        lines.append(f"{CHECK_TEXT[k]}: {'n/a' if v is None else ('yes' if v else 'no')}")
    lines += ["", f"report: {out}/report.md   plot: {out}/tradeoff.png   json: {out}/adapt.json"]
    return "\n".join(lines)
