"""The commands that use a model: ``generate``, ``evaluate``, ``fill-mask`` and ``viz``.

Each command has an ``add_<name>(sub)`` that declares its flags, with help that teaches, and a runner
(``_run_<name>``) that calls the logic in ``lmkit.infer`` and prints the result. The library (and
torch) is imported inside the runners so that ``lmkit --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from lmkit.cli.common import (
    add_checkpoint,
    add_device,
    add_held_out_flags,
    add_json,
    add_no_verify,
    add_out,
    add_overwrite,
    add_seed,
    device_from,
    print_json,
)
from lmkit.errors import LmkitError


def add_generate(sub: Any) -> None:
    p = sub.add_parser(
        "generate",
        help="complete a prompt with a trained checkpoint (greedy or sampled), optionally explained",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print PROMPT followed by the text the model adds to it. On a terminal the prompt is dimmed,\n"
        "the completion bold, and the completion appears as it is generated.\n\n"
        "How the next token is picked:\n"
        "  greedy (default)   always the most likely token: the same prompt always gives the same\n"
        "                     text (which tends to repeat itself)\n"
        "  --sample           draw the token at random from the model's probabilities, after:\n"
        "    --temperature T  divide the logits by T: T < 1 sharpens the distribution (safer;\n"
        "                     T = 0 is greedy), T > 1 flattens it (more surprising)\n"
        "    --top-k K        only the K most likely tokens can be drawn\n"
        "    --top-p P        only the smallest set of most likely tokens whose probabilities add\n"
        '                     up to P (the "nucleus"; the top token is always in it)\n'
        "    --seed S         the same seed gives the same text\n"
        "  --explain          print for every step the top candidates with their probabilities\n"
        "                     before and after temperature/top-k/top-p, and which one was chosen\n\n"
        "The model reads the prompt once (filling its key/value cache), then adds one token per\n"
        "step. It stops at the end-of-sequence token, after --max-new-tokens, or when the context\n"
        "window is full. An encoder-decoder checkpoint encodes the prompt (which may hold sentinels\n"
        "such as <extra_id_0>) and writes its output from a start token. Encoders do not generate\n"
        "text (use `lmkit fill-mask`).\n\n"
        "examples:\n"
        '  lmkit generate runs/x "Once upon a time"\n'
        '  lmkit generate runs/x "Once upon a time" --sample --temperature 0.8 --top-p 0.9 --seed 1\n'
        '  lmkit generate runs/x "The cat" --max-new-tokens 5 --explain',
    )
    add_checkpoint(p)
    p.add_argument("prompt", help='text to complete ("" starts from the beginning-of-sequence token)')
    p.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to add (default 64)")
    p.add_argument("--sample", action="store_true", help="sample the next token instead of taking the most likely")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="with --sample: divide logits by T (default 1; <1 sharper, >1 flatter, 0 = greedy)",
    )
    p.add_argument("--top-k", type=int, default=None, help="with --sample: draw only from the K most likely tokens")
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="with --sample: draw only from the most likely tokens that together have probability P",
    )
    add_seed(p, None, "--sample's draws")
    p.add_argument(
        "--explain",
        action="store_true",
        help="show each step's top candidates, probabilities before/after the settings, and the choice",
    )
    p.add_argument(
        "--truncate",
        choices=["error", "left"],
        default="error",
        help="a prompt too long for the context window: refuse it (error, default) or keep its end (left)",
    )
    p.add_argument(
        "--no-stop-at-eos",
        action="store_true",
        help="keep going after the end-of-sequence token (until --max-new-tokens or the window)",
    )
    add_device(p)
    add_json(p, "one JSON object: prompt, completion, text, tokens, stop_reason, tokens_per_s, settings")
    add_no_verify(p)
    p.set_defaults(func=_run_generate)


def _style(text: str, code: str, on: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if on and text else text


def _run_generate(args: argparse.Namespace) -> int:
    """``lmkit generate CKPT "prompt" [...]``: print the prompt followed by its completion."""
    from lmkit.infer.sampling import N_CANDIDATES, GenerationConfig, format_step
    from lmkit.infer.text import generate
    from lmkit.models.checkpoint import load_model, load_model_config, load_tokenizer
    from lmkit.models.registry import spec_of

    gen_cfg = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop_at_eos=not args.no_stop_at_eos,
        truncate=args.truncate,
    )
    gen_cfg.validate(
        names={
            "max_new_tokens": "--max-new-tokens",
            "temperature": "--temperature",
            "top_k": "--top-k",
            "top_p": "--top-p",
            "seed": "--seed",
            "truncate": "--truncate",
        }
    )
    if not args.sample and (args.temperature != 1.0 or args.top_k is not None or args.top_p is not None):
        print(
            "lmkit: note: --temperature, --top-k and --top-p change sampling only; without --sample decoding "
            "is greedy (always the most likely token)",
            file=sys.stderr,
        )
    spec = spec_of(load_model_config(args.checkpoint).family)
    if not spec.generates:
        raise LmkitError(f"{spec.name} models do not generate text; use `lmkit fill-mask`")
    device = device_from(args)
    tokenizer = load_tokenizer(args.checkpoint)
    model = load_model(args.checkpoint, device=device)
    if tokenizer.vocab_size > model.cfg.vocab_size:
        raise LmkitError(
            f"{args.checkpoint}: tokenizer has {tokenizer.vocab_size} tokens but the model only {model.cfg.vocab_size}"
        )

    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    streaming = color and not args.json and not args.explain
    new_text = spec.decodes == "seq2seq"  # the output is a new text, not the prompt's continuation
    if streaming:  # show the prompt, then the completion as it is made
        sys.stdout.write(_style(args.prompt, "2", True) + ("\n" if new_text and args.prompt else ""))
        sys.stdout.flush()

    def stream(piece: str) -> None:
        sys.stdout.write(_style(piece, "1", True))
        sys.stdout.flush()

    res = generate(model, tokenizer, args.prompt, gen_cfg, explain=args.explain, stream=stream if streaming else None)
    if res.truncated_tokens:
        print(
            f"lmkit: note: the prompt was truncated: its first {res.truncated_tokens} tokens were dropped "
            f"to fit the context window of {model.cfg.max_seq_len}",
            file=sys.stderr,
        )
    if args.json:
        print_json(res.to_dict())
        return 0
    if args.explain:
        print(
            f"{gen_cfg.describe()}. Each step shows the {N_CANDIDATES} most likely next tokens: 'before' is\n"
            "the model's probability, 'after' the probability it was chosen with once the settings are applied\n"
            "('cut' = excluded).\n"
        )
        for s in res.steps:
            print(format_step(s))
            print()
    if streaming:
        sys.stdout.write("\n")
    else:
        sep = "\n" if new_text and res.prompt and res.completion else ""
        print(_style(res.prompt, "2", color) + sep + _style(res.completion, "1", color))
    print(
        f"[{len(res.token_ids)} tokens, stopped by {res.stop_reason}, {res.tokens_per_s:.1f} tokens/s, "
        f"{gen_cfg.describe()}" + (f", seed {res.settings['seed']}" if not gen_cfg.greedy else "") + "]",
        file=sys.stderr,
    )
    return 0


def add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="held-out loss, perplexity and bits per byte of a checkpoint (quantized or not)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a checkpoint on held-out data: mean loss in nats per scored token, perplexity "
        "(exp of the loss) and bits per byte (independent of the tokenizer). Checkpoints written by "
        "`lmkit quantize` load directly (int8 weights stay int8).\n\n"
        "Held-out data: --data (a packed shard folder, one split of it, or text files and folders, packed with "
        "the checkpoint's own tokenizer: how an imported model is scored on your text), else the "
        "run's own validation shards when they are still where its config says.\n\n"
        "examples:\n  lmkit evaluate runs/small\n  lmkit evaluate runs/small-int8 --data corpus/val.jsonl\n"
        "  lmkit evaluate models/smollm2 --data legal/ notes.txt",
    )
    add_checkpoint(p)
    add_held_out_flags(p, "--batches", "held-out data")
    add_json(p, "the result as one JSON object")
    add_no_verify(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    """``lmkit evaluate CKPT [--data PATH...]``: held-out loss, perplexity and bits per byte."""
    from lmkit.infer.evaluate import evaluate_checkpoint

    rep = evaluate_checkpoint(
        args.checkpoint, data=args.data, batches=args.batches, batch_size=args.batch_size, text_field=args.text_field
    )
    if args.json:
        print_json(rep)
        return 0
    print(
        f"evaluated {rep['checkpoint']} ({rep['family']}, {rep['format']} weights, {rep['memory_bytes'] / 1e6:.2f} MB "
        "in memory)"
    )
    print(f"  held-out loss   {rep['loss']:.4f} nats/token")
    print(f"  perplexity      {rep['perplexity']:.3f}")
    if "bits_per_byte" in rep:
        print(f"  bits per byte   {rep['bits_per_byte']:.4f}")
    print(f"  (held-out windows: {rep['held_out']}, {int(rep['tokens']):,} scored tokens)")
    return 0


def add_fill_mask(sub: Any) -> None:
    p = sub.add_parser(
        "fill-mask",
        help="predict the words hidden behind [MASK] with an encoder checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show the most likely tokens, with probabilities, for every [MASK] in TEXT. An encoder\n"
        "(masked LM) reads the whole text, left and right of each mask; several masks are predicted\n"
        "at once, each independently. The last line is the text with every mask filled by its top\n"
        "candidate. Write the mask where a whole word goes, with its usual spaces around it.\n\n"
        "Decoders continue text instead (`lmkit generate`); an encoder-decoder fills a blank by span\n"
        'infilling: `lmkit generate CKPT "The <extra_id_0> of the contract"`.\n\n'
        "examples:\n"
        '  lmkit fill-mask runs/enc "The [MASK] of the contract"\n'
        '  lmkit fill-mask runs/enc "the [MASK] sees the [MASK] ." --top-k 3 --json',
    )
    add_checkpoint(p, "encoder checkpoint folder")
    p.add_argument("text", help="text with one or more [MASK]")
    p.add_argument("--top-k", type=int, default=5, help="candidates shown per mask (default 5)")
    p.add_argument("--mask-token", help="the placeholder written in TEXT (default: the model's own, [MASK] or <mask>)")
    add_device(p)
    add_json(p, "one JSON object: candidates per mask, filled text")
    add_no_verify(p)
    p.set_defaults(func=_run_fill_mask)


def _run_fill_mask(args: argparse.Namespace) -> int:
    """``lmkit fill-mask CKPT "text with [MASK]"``."""
    from lmkit.infer.fillmask import fill_mask, format_result
    from lmkit.models.checkpoint import load_model, load_model_config, load_tokenizer
    from lmkit.models.registry import spec_of

    decodes = spec_of(load_model_config(args.checkpoint).family).decodes
    if decodes == "causal":
        raise LmkitError(
            f"{args.checkpoint}: a decoder checkpoint predicts the next token, not a masked one; use `lmkit generate`"
        )
    if decodes == "seq2seq":
        raise LmkitError(
            f"{args.checkpoint}: an encoder-decoder fills blanks by span infilling: "
            '`lmkit generate CKPT "The <extra_id_0> of the contract"`'
        )
    tokenizer = load_tokenizer(args.checkpoint)
    model = load_model(args.checkpoint, device=device_from(args))
    res = fill_mask(model, tokenizer, args.text, top_k=args.top_k, mask_text=args.mask_token)
    if args.json:
        print_json(res.to_dict())
    else:
        print(format_result(res))
    sys.stdout.flush()
    return 0


def add_viz(sub: Any) -> None:
    p = sub.add_parser("viz", help="draw attention maps and token-embedding projections of a checkpoint")
    vsub = p.add_subparsers(dest="viz_command", required=True, metavar="WHAT")
    a = vsub.add_parser(
        "attention",
        help="token x token attention heat maps, per layer and head, to PNG",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run TEXT through the model once and draw each layer's self-attention: one heat map per\n"
        "layer (rows) and head (columns); row i of a map is how token i spreads its attention over\n"
        "the tokens. Decoders only look back (the upper triangle stays dark); encoders, and the\n"
        "encoder of an encoder-decoder, look both ways. Also prints, per head, the average attention\n"
        "on the token itself, the previous, the next and the first token, and the entropy.\n\n"
        'example:\n  lmkit viz attention runs/enc "the cat sees the bird ." --out maps.png',
    )
    add_checkpoint(a)
    a.add_argument("text", help="the text to look at (short: every token becomes a row and a column)")
    add_out(a, "PNG file to write", file=True, required=True)
    a.add_argument("--layers", default=None, help="only these layers, e.g. 0,2 (default all)")
    a.add_argument("--heads", default=None, help="only these heads, e.g. 0,1 (default all)")
    add_overwrite(a, "a picture lmkit wrote at --out", "a file lmkit did not write or one changed since")
    add_device(a)
    a.add_argument("--weights", action="store_true", help="with --json: include the full weight tensors")
    add_json(a, "tokens and per-head figures as JSON")
    add_no_verify(a)
    a.set_defaults(func=_run_viz_attention)
    e = vsub.add_parser(
        "embeddings",
        help="project chosen words' token embeddings to 2-D/3-D (PCA) and compare their angles",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Look up each word's input embedding (a word split into several tokens is the mean of its\n"
        "token vectors), project them onto their first 2 or 3 principal components (PCA) and draw\n"
        "them, and print the cosine similarity and the angle between every pair: words the model\n"
        "uses alike point in similar directions (cosine near 1, small angle).\n\n"
        "example:\n  lmkit viz embeddings runs/enc --words cat dog bird river house --out emb.png --dims 3",
    )
    add_checkpoint(e)
    e.add_argument("--words", nargs="+", required=True, help="two or more words to compare")
    add_out(e, "PNG file to write", file=True, required=True)
    e.add_argument("--dims", type=int, choices=[2, 3], default=2, help="2-D or 3-D projection (default 2)")
    add_overwrite(e, "a picture lmkit wrote at --out", "a file lmkit did not write or one changed since")
    add_device(e)
    add_json(e, "coordinates, cosines and angles as JSON")
    add_no_verify(e)
    e.set_defaults(func=_run_viz_embeddings)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from lmkit.models.checkpoint import load_model, load_tokenizer

    return load_model(args.checkpoint, device=device_from(args)), load_tokenizer(args.checkpoint)


def _int_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LmkitError(f"expected comma-separated numbers like 0,2, got {text!r}") from None


def _run_viz_attention(args: argparse.Namespace) -> int:
    """``lmkit viz attention CKPT "text" --out maps.png``."""
    from lmkit.infer.viz import attention_maps, check_out_picture, head_summary, plot_attention

    check_out_picture(args.out, args.overwrite, [args.checkpoint])
    model, tok = _load(args)
    maps = attention_maps(model, tok, args.text)
    path = plot_attention(maps, args.out, args.overwrite, _int_list(args.layers), _int_list(args.heads))
    summary = head_summary(maps)
    if args.json:
        print_json(
            {
                "png": str(path),
                "tokens": maps.tokens,
                "stack": maps.stack,
                "heads": summary,
                "weights": maps.weights.tolist() if args.weights else None,
            }
        )
        return 0
    print(f"{maps.family}: {maps.stack}; {len(maps.tokens)} tokens: {' '.join(repr(t) for t in maps.tokens)}")
    print(f"  {'layer':>5} {'head':>4}  {'self':>5} {'prev':>5} {'next':>5} {'first':>5} {'entropy':>8}  mostly")
    for r in summary:
        print(
            f"  {r['layer']:>5} {r['head']:>4}  {r['self']:5.2f} {r['previous']:5.2f} {r['next']:5.2f} "
            f"{r['first']:5.2f} {r['entropy_bits']:6.2f} b  {r['mostly']}"
        )
    print(f"attention maps: {path}")
    return 0


def _run_viz_embeddings(args: argparse.Namespace) -> int:
    """``lmkit viz embeddings CKPT --words w1 w2 ... --out emb.png [--dims 2|3]``."""
    from lmkit.infer.viz import check_out_picture, dims_text, embedding_projection, format_similarity, plot_embeddings

    check_out_picture(args.out, args.overwrite, [args.checkpoint])
    model, tok = _load(args)
    proj = embedding_projection(model, tok, args.words, args.dims)
    path = plot_embeddings(proj, args.out, args.overwrite)
    if args.json:
        print_json({"png": str(path), **proj.to_dict()})
        return 0
    print("tokens: " + ", ".join(f"{w} = {' + '.join(repr(p) for p in ps)}" for w, ps in zip(proj.words, proj.pieces)))
    print(f"PCA: {dims_text(proj)}")
    print("cosine similarity (1 = same direction, 0 = orthogonal (90°), -1 = opposite):")
    print(format_similarity(proj))
    print(f"projection: {path}")
    return 0
