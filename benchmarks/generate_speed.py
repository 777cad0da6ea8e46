"""Generation speed: lmkit's decoder against Hugging Face ``LlamaForCausalLM.generate``, same weights.

A random lmkit decoder (vocab 8192, d_model 256, 4 layers, 4 heads, context 256) is copied into a
``transformers`` Llama (the weight names map one to one), checked to give identical greedy tokens,
and both generate 128 new tokens after a 32-token prompt at batch 1, greedy and sampling, with
runs alternating between the contenders so that machine noise hits them alike. Prints tokens/s
medians and the ratio lmkit / HF (target: >= 3x, greedy and sampling). Also timed: lmkit's own modules in a plain KV-cache loop (what
``generate`` runs for models it cannot pack), to show what the packed decode step adds.

Then the same race on a model a user would import: a SmolLM2-shaped ``LlamaForCausalLM`` of ~30M
parameters with grouped-query attention (8 query heads sharing 2 key/value heads), built by
``transformers``, saved with ``save_pretrained`` and read by ``lmkit import-hf`` (target: lmkit
greedy >= 2x transformers ``generate`` on the same weights).

    python benchmarks/generate_speed.py [--rounds 7] [--threads N] [--json] [--skip-imported]

Timings include everything a caller waits for (prefill, every step, choosing tokens); lmkit's
packed weights are built once per model and reused, so the warm-up round builds them.

On a machine other jobs are using, give ``--threads 1``: with two threads every parallel region
(CPU attention most of all) waits for a descheduled thread, which slows both sides 5-10x and
makes the figures mostly noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from lmkit.config import ModelConfig
from lmkit.infer.generate import generate_ids
from lmkit.infer.sampling import GenerationConfig, choose_next, make_generator
from lmkit.models import build_model
from lmkit.models.decoder import Decoder
from lmkit.models.hf_adapters.llama import config_to_hf as hf_config
from lmkit.models.hf_adapters.llama import llama_like_rules

VOCAB, D, LAYERS, HEADS, CONTEXT = 8192, 256, 4, 4, 256
PROMPT, NEW = 32, 128
SAMPLING = {"temperature": 0.8, "top_k": 50, "top_p": 0.95}


def build_pair(seed: int = 0) -> tuple[Decoder, torch.nn.Module]:
    """An lmkit decoder and a Hugging Face Llama holding exactly its weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = ModelConfig(
        family="decoder", vocab_size=VOCAB, d_model=D, n_layers=LAYERS, n_heads=HEADS, max_seq_len=CONTEXT
    )
    model = build_model(cfg).eval()
    hf_cfg = {k: v for k, v in hf_config(cfg).items() if k not in ("architectures", "model_type")}
    hf = LlamaForCausalLM(LlamaConfig(**hf_cfg, attn_implementation="sdpa")).eval()
    ours, theirs = model.state_dict(), hf.state_dict()
    with torch.no_grad():
        for rule in llama_like_rules(cfg):  # tok_emb -> embed_tokens, attn_norm -> input_layernorm...
            name, hf_name = rule.ours[0], rule.theirs
            theirs[hf_name].copy_(ours[name])
    hf.generation_config.eos_token_id = None  # both sides make exactly NEW tokens
    hf.generation_config.pad_token_id = 0
    return model, hf


# the imported model: SmolLM2's shape, shrunk to ~30M parameters (GQA 8/2 heads, tied embeddings)
GQA = {"vocab_size": 16384, "hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8}
GQA_HEADS, GQA_KV_HEADS = 8, 2


def build_imported(seed: int = 0) -> tuple[Decoder, torch.nn.Module, int]:
    """A GQA Llama built by transformers, imported by ``lmkit import-hf``: (lmkit model, HF model, parameters)."""
    import tempfile

    from transformers import LlamaConfig, LlamaForCausalLM

    from lmkit.models import count_parameters
    from lmkit.models.checkpoint import load_model
    from lmkit.ship.import_hf import import_hf

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        **GQA,
        num_attention_heads=GQA_HEADS,
        num_key_value_heads=GQA_KV_HEADS,
        max_position_embeddings=CONTEXT,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    hf = LlamaForCausalLM(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(f"{tmp}/hf")
        import_hf(f"{tmp}/hf", f"{tmp}/lmkit", no_tokenizer=True)
        model = load_model(f"{tmp}/lmkit").eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return model, hf, count_parameters(model)


def contenders(
    model: Decoder, hf: torch.nn.Module, prompt: torch.Tensor, sample: bool
) -> dict[str, Callable[[], torch.Tensor]]:
    """name -> a function returning the NEW generated ids (1, NEW)."""
    settings = SAMPLING if sample else {}
    cfg = GenerationConfig(max_new_tokens=NEW, do_sample=sample, stop_at_eos=False, **settings)  # type: ignore[arg-type]

    def lmkit() -> torch.Tensor:
        gen = make_generator(0)[0] if sample else None
        return generate_ids(model, prompt, cfg, generator=gen)[:, PROMPT:]

    def lmkit_plain() -> torch.Tensor:  # the model's own modules and KVCache, one token per step
        gen = make_generator(0)[0] if sample else None
        with torch.inference_mode():
            cache = model.new_cache(1, PROMPT + NEW)
            logits = model(prompt, cache)[:, -1]
            out = []
            for i in range(NEW):
                tok = logits.argmax(-1) if not sample else choose_next(logits, cfg, gen)[0]
                out.append(tok)
                if i + 1 < NEW:
                    logits = model(tok[:, None], cache)[:, -1]
            return torch.stack(out, dim=1)

    def hf_generate() -> torch.Tensor:
        with torch.inference_mode():
            if sample:
                torch.manual_seed(0)
                out = hf.generate(prompt, max_new_tokens=NEW, do_sample=True, **settings)
            else:
                out = hf.generate(prompt, max_new_tokens=NEW, do_sample=False)
        return out[:, PROMPT:]

    return {"lmkit": lmkit, "lmkit (plain KV loop)": lmkit_plain, "HF generate": hf_generate}


def bench(fns: dict[str, Callable[[], torch.Tensor]], rounds: int) -> dict[str, float]:
    """Median tokens/s of each function; one warm-up round, then rounds in rotating order."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            out = fns[name]()
            dt = time.perf_counter() - t0
            assert out.shape == (1, NEW), (name, out.shape)
            if r > 0:
                times[name].append(NEW / dt)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per contender (default 7)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ap.add_argument("--skip-imported", action="store_true", help="leave out the imported GQA model's race")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    model, hf = build_pair()
    prompt = torch.randint(200, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(1))

    greedy = contenders(model, hf, prompt, sample=False)
    ours, plain, theirs = (greedy[k]() for k in greedy)
    same = torch.equal(ours, theirs) and torch.equal(ours, plain)
    first_diff = None if same else int((ours != theirs).flatten().nonzero()[0])
    results: dict[str, object] = {
        "size": {
            "vocab": VOCAB,
            "d_model": D,
            "layers": LAYERS,
            "heads": HEADS,
            "context": CONTEXT,
            "prompt_tokens": PROMPT,
            "new_tokens": NEW,
            "batch": 1,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "greedy_tokens_identical": same,
        "first_difference_at": first_diff,
    }
    print(
        f"{NEW} new tokens after a {PROMPT}-token prompt, batch 1, vocab {VOCAB}, d_model {D}, {LAYERS} layers, "
        f"{HEADS} heads; torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}"
    )
    print(
        f"sanity: greedy tokens identical to HF generate (same weights), token for token: {same}"
        + ("" if same else f" (first difference at new token {first_diff})")
    )
    for mode, sample in (("greedy", False), ("sampling", True)):
        med = bench(contenders(model, hf, prompt, sample), args.rounds)
        ratio = med["lmkit"] / med["HF generate"]
        results[mode] = {
            "tokens_per_s": {k: round(v, 1) for k, v in med.items()},
            "ratio_lmkit_over_hf": round(ratio, 2),
        }
        label = (
            mode
            if not sample
            else f"sampling (T={SAMPLING['temperature']}, top-k {SAMPLING['top_k']}, top-p {SAMPLING['top_p']})"
        )
        print(f"\n{label}: median tokens/s over {args.rounds} alternating rounds")
        for name, v in med.items():
            print(f"  {name:<24} {v:8.1f}")
        print(
            f"  ratio lmkit / HF          {ratio:8.2f}x   (target >= 3x; plain KV loop / HF: "
            f"{med['lmkit (plain KV loop)'] / med['HF generate']:.2f}x)"
        )
    if not args.skip_imported:
        results["imported_gqa"] = race_imported(args.rounds)
    if args.json:
        print(json.dumps(results, indent=2))


def race_imported(rounds: int) -> dict[str, object]:
    """Greedy batch-1 race on the imported GQA Llama: lmkit generate against transformers generate."""
    model, hf, params = build_imported()
    prompt = torch.randint(200, GQA["vocab_size"], (1, PROMPT), generator=torch.Generator().manual_seed(2))
    fns = contenders(model, hf, prompt, sample=False)
    same = torch.equal(fns["lmkit"](), fns["HF generate"]())
    med = bench(fns, rounds)
    ratio = med["lmkit"] / med["HF generate"]
    print(
        f"\nimported GQA Llama ({params / 1e6:.1f}M parameters, {GQA_HEADS} query / {GQA_KV_HEADS} key-value heads, "
        f"d_model {GQA['hidden_size']}, {GQA['num_hidden_layers']} layers, vocab {GQA['vocab_size']}), greedy: "
        f"median tokens/s over {rounds} alternating rounds; greedy tokens identical to HF: {same}"
    )
    for name, v in med.items():
        print(f"  {name:<24} {v:8.1f}")
    print(f"  ratio lmkit / HF          {ratio:8.2f}x   (target >= 2x)")
    return {
        "params": params,
        "greedy_tokens_identical": same,
        "tokens_per_s": {k: round(v, 1) for k, v in med.items()},
        "ratio_lmkit_over_hf": round(ratio, 2),
    }


if __name__ == "__main__":
    main()
