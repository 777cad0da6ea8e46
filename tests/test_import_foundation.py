"""Foundation decoders: each Hugging Face class lmkit imports, built tiny by transformers from a shrunken copy of
a real model's config.json (the real keys), computes what transformers computes: logits, greedy and seeded
sampled tokens, cached decoding (the packed CPU path included), a right-padded batch, ragged server rows,
attention maps; exports back to the same class; and is planned with its real parameter count. Settings
lmkit cannot represent are refused in one line naming the key."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import transformers  # noqa: E402

from foundation_models import build_hf, tol  # noqa: E402
from lmkit.config import ModelConfig, model_config_from_dict  # noqa: E402
from lmkit.config_io import ConfigError  # noqa: E402
from lmkit.errors import LmkitError  # noqa: E402
from lmkit.infer.generate import generate_ids  # noqa: E402
from lmkit.infer.packed import PackedDecoder, packed_decoder  # noqa: E402
from lmkit.infer.products import product_forms  # noqa: E402
from lmkit.infer.sampling import GenerationConfig  # noqa: E402
from lmkit.infer.viz import capture_attention  # noqa: E402
from lmkit.model_variants import RopeScaling  # noqa: E402
from lmkit.models import build_model, count_parameters  # noqa: E402
from lmkit.models.checkpoint import load_model, load_state, read_config, save_checkpoint  # noqa: E402
from lmkit.models.decoder import Decoder  # noqa: E402
from lmkit.models.hf import hf_architecture  # noqa: E402
from lmkit.models.layers import KVCache  # noqa: E402
from lmkit.plan.compute import count_params, flops_per_token  # noqa: E402
from lmkit.ship.export_hf import export_hf  # noqa: E402
from lmkit.ship.import_hf import import_hf  # noqa: E402

transformers.logging.set_verbosity_error()

# Shrunken copies of real config.json files: every key as the real file spells it, sizes made tiny.
SMOLLM2_135M = {  # HuggingFaceTB/SmolLM2-135M: GQA 9/3 heads, tied, rope_theta 100000
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "silu",
    "hidden_size": 48,
    "initializer_range": 0.041666666666666664,
    "intermediate_size": 128,
    "is_llama_config": True,
    "max_position_embeddings": 64,
    "model_type": "llama",
    "num_attention_heads": 6,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_interleaved": False,
    "rope_scaling": None,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.1",
    "use_cache": True,
    "vocab_size": 256,
}
LLAMA_32_1B = {  # meta-llama/Llama-3.2-1B: rope_scaling llama3, head_dim key (here != hidden/heads), GQA
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "hidden_size": 48,
    "initializer_range": 0.02,
    "intermediate_size": 96,
    "max_position_embeddings": 128,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 16,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0",
    "use_cache": True,
    "vocab_size": 256,
}
TINYLLAMA_LINEAR = {  # TinyLlama-1.1B's keys (untied, 32/4 heads) with a linear rope scaling and a sliding_window key
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 1,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"type": "linear", "factor": 2.0},
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.35.0",
    "use_cache": True,
    "vocab_size": 256,
}
QWEN25_05B = {  # Qwen/Qwen2.5-0.5B: q/k/v biases, 14/2 heads, sliding_window set but use_sliding_window false
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 56,
    "initializer_range": 0.02,
    "intermediate_size": 96,
    "max_position_embeddings": 128,
    "max_window_layers": 2,
    "model_type": "qwen2",
    "num_attention_heads": 7,
    "num_hidden_layers": 2,
    "num_key_value_heads": 1,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 128,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.1",
    "use_cache": True,
    "use_mrope": False,
    "use_sliding_window": False,
    "vocab_size": 288,
}
GPT2 = {  # openai-community/gpt2
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 64,
    "n_embd": 32,
    "n_head": 4,
    "n_layer": 2,
    "n_positions": 64,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 256,
}
PYTHIA_14M = {  # EleutherAI/pythia-14m: parallel residual, rotary on 25% of each head, untied embed_out
    "architectures": ["GPTNeoXForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 64,
    "model_type": "gpt_neox",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "rotary_emb_base": 10000,
    "rotary_pct": 0.25,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.24.0",
    "use_cache": True,
    "use_parallel_residual": True,
    "vocab_size": 272,
}
BLOOM_560M = {  # bigscience/bloom-560m: ALiBi, word_embeddings_layernorm (6 heads: not a power of two)
    "apply_residual_connection_post_layernorm": False,
    "architectures": ["BloomForCausalLM"],
    "attention_dropout": 0.0,
    "attention_softmax_in_fp32": True,
    "bias_dropout_fusion": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_dropout": 0.0,
    "hidden_size": 48,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "masked_softmax_fusion": True,
    "model_type": "bloom",
    "n_head": 6,
    "n_inner": None,
    "n_layer": 2,
    "offset_alibi": 100,
    "pad_token_id": 3,
    "pretraining_tp": 1,
    "skip_bias_add": True,
    "skip_bias_add_qkv": False,
    "slow_but_exact": False,
    "transformers_version": "4.21.0",
    "unk_token_id": 0,
    "use_cache": True,
    "vocab_size": 256,
}
CLASSES = {
    "smollm2": SMOLLM2_135M,
    "llama3.2": LLAMA_32_1B,
    "tinyllama-linear": TINYLLAMA_LINEAR,
    "llama-biases": {**SMOLLM2_135M, "attention_bias": True, "mlp_bias": True, "tie_word_embeddings": False},
    "qwen2.5": QWEN25_05B,
    "gpt2": GPT2,
    "pythia": PYTHIA_14M,
    "bloom": BLOOM_560M,
}
PACKED = set(CLASSES)  # every layout decodes through the CPU fast path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=sorted(CLASSES))
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The class saved by transformers, imported from its own (5.x) config.json and from the real (4.x) one."""
    name = request.param
    real = CLASSES[name]
    root = tmp_path_factory.mktemp(name.replace(".", "_"))
    hf = build_hf(real)
    hf.save_pretrained(str(root / "hf"))
    import_hf(root / "hf", root / "ckpt", no_tokenizer=True)
    (root / "hf4").mkdir()
    for f in (root / "hf").iterdir():
        (root / "hf4" / f.name).write_bytes(f.read_bytes())
    (root / "hf4" / "config.json").write_text(json.dumps(real))  # the transformers 4.x spelling, as on the hub
    import_hf(root / "hf4", root / "ckpt4", no_tokenizer=True)
    model = load_model(root / "ckpt")
    assert isinstance(model, Decoder)
    return {"name": name, "real": real, "hf": hf, "model": model.eval(), "root": root}


def test_logits_match_transformers_from_either_config_spelling(imported: dict[str, Any]) -> None:
    hf, model, root = imported["hf"], imported["model"], imported["root"]
    assert read_config(root / "ckpt")["model"] == read_config(root / "ckpt4")["model"]  # 5.x and 4.x spellings
    x = torch.randint(0, model.cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(input_ids=x).logits
        ours = model(x)
    assert float((ours - theirs).abs().max()) <= tol(theirs)


def test_greedy_and_seeded_sampled_tokens_equal_transformers_generate(imported: dict[str, Any]) -> None:
    hf, model = imported["hf"], imported["model"]
    prompt = torch.tensor([[5, 17, 42, 9, 100, 7]])
    mask = torch.ones_like(prompt)
    for do_sample in (False, True):
        gen = GenerationConfig(max_new_tokens=12, do_sample=do_sample, temperature=0.9, seed=11, stop_at_eos=False)
        ours = generate_ids(model, prompt, gen)[0].tolist()
        torch.manual_seed(11)
        extra = {"temperature": 0.9, "top_k": 0, "top_p": 1.0} if do_sample else {}
        with torch.no_grad():
            theirs = hf.generate(
                prompt, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=do_sample, **extra
            )[0].tolist()
        assert ours == theirs, ("sampled" if do_sample else "greedy", ours, theirs)


def test_cached_decoding_equals_a_full_forward(imported: dict[str, Any]) -> None:
    model = imported["model"]
    assert (packed_decoder(model) is not None) == (imported["name"] in PACKED)
    prompt = torch.randint(0, model.cfg.vocab_size, (3, 7), generator=torch.Generator().manual_seed(1))
    gen = GenerationConfig(max_new_tokens=15, do_sample=True, temperature=1.0, seed=3, stop_at_eos=False)
    assert torch.equal(generate_ids(model, prompt, gen, cache=True), generate_ids(model, prompt, gen, cache=False))
    # the model's own KV cache (the path of quantized models and of layouts the packed step does not take)
    seq = torch.randint(0, model.cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(seq)
        kv = model.new_cache(2, 20)
        assert kv.k[0].shape[1] == model.cfg.kv_heads  # grouped-query attention caches the key/value heads only
        steps = [model(seq[:, :8], kv)] + [model(seq[:, t : t + 1], kv) for t in range(8, 20)]
    assert float((torch.cat(steps, dim=1) - full).abs().max()) <= tol(full)
    # the packed CPU step with each kernel (MKL on (in, out) weights, oneDNN on blocked ones):
    # prefill, a second chunk after it, then one token at a time
    assert packed_decoder(model) is not None
    want = full[:, [5, 8, *range(9, 20)]]  # (2, 13, V): the logits after each call's last token
    for form in product_forms():
        session = PackedDecoder(model, form).start(2, 20)
        with torch.no_grad():
            got = [session.forward(seq[:, :6]), session.forward(seq[:, 6:9])]
            got += [session.forward(seq[:, t : t + 1]) for t in range(9, 20)]
        assert float((torch.stack(got, dim=1) - want).abs().max()) <= tol(full), form


def test_a_right_padded_batch_and_ragged_rows_equal_each_sequence_alone(imported: dict[str, Any]) -> None:
    hf, model = imported["hf"], imported["model"]
    g = torch.Generator().manual_seed(4)
    a, b = torch.randint(4, 200, (1, 14), generator=g), torch.randint(4, 200, (1, 9), generator=g)
    batch = torch.zeros(2, 14, dtype=torch.long)
    batch[0], batch[1, :9] = a[0], b[0]
    mask = torch.zeros_like(batch)
    mask[0], mask[1, :9] = 1, 1
    with torch.no_grad():
        ours = model(batch)
        theirs = hf(input_ids=batch, attention_mask=mask).logits
        alone = model(b)
    assert float((ours[1, :9] - alone[0]).abs().max()) <= tol(alone)
    assert float((ours[0] - theirs[0]).abs().max()) <= tol(theirs)
    assert float((ours[1, :9] - theirs[1, :9]).abs().max()) <= tol(theirs)
    # a server's ragged rows (KVCache.slots): each request at its own position, one step for both
    with torch.no_grad():
        slots = KVCache.slots(model.new_cache(1, 32), capacity=4)
        for seq in (a, b):
            one = model.new_cache(1, 32)
            model(seq, one)
            slots.add_row(one)
        nxt = torch.tensor([[7], [11]])
        step = model(nxt, slots)[:, -1]
        ref_a = model(torch.cat([a, nxt[:1]], dim=1))[0, -1]
        ref_b = model(torch.cat([b, nxt[1:]], dim=1))[0, -1]
    assert float((step[0] - ref_a).abs().max()) <= tol(ref_a)
    assert float((step[1] - ref_b).abs().max()) <= tol(ref_b)


def test_attention_maps_equal_transformers_attention_weights(imported: dict[str, Any]) -> None:
    hf, model = imported["hf"], imported["model"]
    x = torch.randint(4, 200, (1, 10), generator=torch.Generator().manual_seed(5))
    ours, _ = capture_attention(model, x)  # (L, H, T, T)
    with torch.no_grad():
        theirs = torch.stack([w[0] for w in hf(input_ids=x, output_attentions=True).attentions])
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= 1e-5


def test_export_writes_back_the_same_class_with_the_same_logits(imported: dict[str, Any]) -> None:
    hf, root, real = imported["hf"], imported["root"], imported["real"]
    report = export_hf(root / "ckpt", root / "export")  # verified by transformers on the way (lmkit.ship.verify_hf)
    assert report["parity"]["ok"] and report["architecture"] == real["architectures"][0]
    written = json.loads((root / "export" / "config.json").read_text())
    assert written["architectures"] == real["architectures"]
    back = transformers.AutoModelForCausalLM.from_pretrained(str(root / "export"), attn_implementation="eager").eval()
    assert type(back).__name__ == real["architectures"][0]
    if "num_key_value_heads" in real:
        assert back.config.num_key_value_heads == real["num_key_value_heads"]
    x = torch.randint(0, imported["model"].cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want, got = hf(input_ids=x).logits, back(input_ids=x).logits
    assert float((want - got).abs().max()) <= tol(want)


def test_the_plan_counts_the_real_architecture(imported: dict[str, Any]) -> None:
    model, hf = imported["model"], imported["hf"]
    counted = count_params(model.cfg)
    assert counted.total == count_parameters(model) == sum(p.numel() for p in hf.parameters())
    embedding = model.tok_emb.weight.numel() + (model.pos_emb.weight.numel() if model.pos_emb is not None else 0)
    assert counted.embedding == embedding and counted.non_embedding == counted.total - embedding
    assert flops_per_token(model.cfg, 32) > 6 * counted.non_embedding


def test_an_imported_model_quantizes_to_int8_and_still_decodes(imported: dict[str, Any]) -> None:
    from lmkit.ship.quantize import quantize_checkpoint

    root, model = imported["root"], imported["model"]
    quantize_checkpoint(root / "ckpt", out=root / "int8", to="int8", show_progress=False)
    q = load_model(root / "int8").eval()
    assert packed_decoder(q) is None  # int8 layers decode through the model's own forward and KV cache
    x = torch.randint(0, model.cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref, got = model(x), q(x)
    assert float((ref - got).abs().max()) <= 0.05 * float(ref.abs().max())  # int8 rounding, not a mapping error
    gen = GenerationConfig(max_new_tokens=6, stop_at_eos=False)
    assert torch.equal(generate_ids(q, x[:, :5], gen, cache=True), generate_ids(q, x[:, :5], gen, cache=False))


def test_continued_pretraining_lowers_the_loss(imported: dict[str, Any]) -> None:
    model = copy.deepcopy(imported["model"]).train()
    ids = torch.randint(0, model.cfg.vocab_size, (4, 17), generator=torch.Generator().manual_seed(8))
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model.loss(batch)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0], losses


# Models lmkit builds itself in each class's layout: export writes that class, import gives them back unchanged.
LAYOUTS = {
    "LlamaForCausalLM": {"n_kv_heads": 2, "head_size": 12},
    "Qwen2ForCausalLM": {"n_kv_heads": 1, "bias": "qkv", "rope_scaling": RopeScaling("llama3", 8.0, 1.0, 4.0, 32)},
    "GPT2LMHeadModel": {
        "pos_encoding": "learned",
        "norm": "layer",
        "bias": "all",
        "mlp": "plain",
        "activation": "gelu_tanh",
    },
    "GPTNeoXForCausalLM": {
        "norm": "layer",
        "bias": "all",
        "mlp": "plain",
        "activation": "gelu",
        "residual": "parallel",
        "rotary_fraction": 0.5,
        "tie_embeddings": False,
    },
    "BloomForCausalLM": {
        "pos_encoding": "alibi",
        "norm": "layer",
        "bias": "all",
        "mlp": "plain",
        "activation": "gelu_tanh",
        "embed_norm": True,
    },
}


@pytest.mark.parametrize("arch", sorted(LAYOUTS))
def test_lmkit_models_in_each_layout_export_as_that_class_and_come_back_unchanged(tmp_path: Path, arch: str) -> None:
    cfg = ModelConfig(vocab_size=200, d_model=32, n_layers=2, n_heads=4, max_seq_len=48, **LAYOUTS[arch])  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_checkpoint(tmp_path / "ckpt", model, cfg, meta={"step": 1})
    report = export_hf(tmp_path / "ckpt", tmp_path / "hf")  # verified against transformers
    assert report["architecture"] == arch and report["parity"]["ok"]
    import_hf(tmp_path / "hf", tmp_path / "back", no_tokenizer=True)
    assert read_config(tmp_path / "back")["model"] == read_config(tmp_path / "ckpt")["model"]
    a, b = load_state(tmp_path / "ckpt"), load_state(tmp_path / "back")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_defaults_are_lmkits_own_decoder() -> None:
    """A config without the variant keys (every checkpoint written before them) is the Llama layout it was."""
    old = {"family": "decoder", "vocab_size": 64, "d_model": 32, "n_layers": 1, "n_heads": 4, "max_seq_len": 16}
    cfg = model_config_from_dict(old)
    assert (cfg.kv_heads, cfg.head_dim, cfg.norm, cfg.bias, cfg.mlp, cfg.residual) == (
        4,
        8,
        "rms",
        "none",
        "gated",
        "pre",
    )
    names = set(build_model(cfg).state_dict())
    assert names == {
        "tok_emb.weight",
        "norm.weight",
        *(f"blocks.0.{n}.weight" for n in ("attn_norm", "mlp_norm")),
        *(f"blocks.0.attn.{p}_proj.weight" for p in "qkvo"),
        *(f"blocks.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
    }
    assert hf_architecture(cfg) == "LlamaForCausalLM"


@pytest.mark.parametrize("name", ["gpt2", "pythia", "bloom"])
def test_files_of_older_uploads_import_base_names_and_buffers(tmp_path: Path, name: str) -> None:
    """The original uploads name tensors without the base prefix (saved from ``GPT2Model``) and carry
    causal-mask and rotary buffers, which hold no weights."""
    from safetensors.torch import load_file, save_file

    real = CLASSES[name]
    hf = build_hf(real)
    hf.save_pretrained(str(tmp_path / "hf"))
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    if name == "pythia":
        state["gpt_neox.layers.0.attention.bias"] = torch.ones(1, 1, 64, 64, dtype=torch.bool).tril()
        state["gpt_neox.layers.0.attention.masked_bias"] = torch.tensor(-1e9)
        state["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = torch.ones(2)
    else:
        state = {k.removeprefix("transformer."): v for k, v in state.items()}
        if name == "gpt2":
            state["h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
            state["h.1.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "hf" / "config.json").write_text(json.dumps(real))
    import_hf(tmp_path / "hf", tmp_path / "ckpt", no_tokenizer=True)
    x = torch.randint(0, real["vocab_size"], (1, 12), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want, got = hf(input_ids=x).logits, load_model(tmp_path / "ckpt")(x)
    assert float((want - got).abs().max()) <= tol(want)


@pytest.mark.parametrize(
    "fields,key",
    [
        ({"n_heads": 6, "n_kv_heads": 4, "d_model": 48}, "model.n_kv_heads"),
        ({"n_kv_heads": 0}, "model.n_kv_heads"),
        ({"d_model": 50, "n_heads": 4}, "model.n_heads"),
        ({"rotary_fraction": 1.5}, "model.rotary_fraction"),
        ({"pos_encoding": "learned", "rotary_fraction": 0.5}, "model.rotary_fraction"),
        ({"pos_encoding": "alibi", "rope_scaling": {"type": "linear", "factor": 2.0}}, "model.rope_scaling.type"),
        ({"rope_scaling": {"type": "linear", "factor": 0.0}}, "model.rope_scaling.factor"),
        (
            {"rope_scaling": {"type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1}},
            "model.rope_scaling.low_freq_factor",
        ),
        ({"family": "encoder", "bias": "qkv"}, "model.bias"),
        ({"family": "encdec", "pos_encoding": "alibi"}, "model.pos_encoding"),
    ],
)
def test_inconsistent_variants_are_refused_naming_the_key(fields: dict[str, Any], key: str) -> None:
    base = {"d_model": 32, "n_heads": 4, "n_layers": 1, "vocab_size": 64, "max_seq_len": 16}
    with pytest.raises(ConfigError) as err:
        model_config_from_dict({**base, **fields})
    assert err.value.key == key and key in str(err.value) and "\n" not in str(err.value)
    # and d_model need not split evenly once the head size is given
    model_config_from_dict({**base, "d_model": 50, "n_heads": 4, "head_size": 16})


# --------------------------------------------------------------------------- refused, in one line


def _folder(path: Path, real: dict[str, Any], **changes: Any) -> Path:
    c = {**copy.deepcopy(real), **changes}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(c))
    return path


@pytest.mark.parametrize(
    "real,changes,message",
    [
        (QWEN25_05B, {"use_sliding_window": True}, "use_sliding_window True is not supported"),
        (QWEN25_05B, {"layer_types": ["full_attention", "sliding_attention"]}, "layer_types \\['sliding_attention'\\]"),
        (QWEN25_05B, {"use_mrope": True}, "use_mrope True"),
        (SMOLLM2_135M, {"num_local_experts": 8}, "num_local_experts 8: mixture of experts"),
        (SMOLLM2_135M, {"qk_norm": True}, "qk_norm True: query/key normalisation"),
        (SMOLLM2_135M, {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type 'yarn'"),
        (
            SMOLLM2_135M,
            {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4}},
            "rope_parameters.rope_type 'dynamic'",
        ),
        (SMOLLM2_135M, {"rope_interleaved": True}, "rope_interleaved True"),
        (SMOLLM2_135M, {"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        (SMOLLM2_135M, {"attention_bias": True}, "attention_bias True with mlp_bias False"),
        (
            SMOLLM2_135M,
            {"num_key_value_heads": 4},
            "model.n_heads \\(6\\) must be a multiple of model.n_kv_heads \\(4\\)",
        ),
        (GPT2, {"activation_function": "relu"}, "activation_function 'relu'"),
        (GPT2, {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx True"),
        (GPT2, {"scale_attn_weights": False}, "scale_attn_weights False"),
        (PYTHIA_14M, {"attention_bias": False}, "attention_bias False"),
        (PYTHIA_14M, {"hidden_act": "relu"}, "hidden_act 'relu'"),
        (PYTHIA_14M, {"rotary_pct": 0.1}, "needs an even number of rotated dimensions"),
        (BLOOM_560M, {"apply_residual_connection_post_layernorm": True}, "apply_residual_connection_post_layernorm"),
        (BLOOM_560M, {"architectures": ["FalconForCausalLM"], "model_type": "falcon"}, "not supported"),
    ],
)
def test_settings_lmkit_cannot_represent_are_refused_in_one_line(
    tmp_path: Path, real: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    folder = _folder(tmp_path / "hf", real, **changes)
    with pytest.raises(LmkitError, match=message) as err:
        import_hf(folder, tmp_path / "ckpt", no_tokenizer=True)
    assert "\n" not in str(err.value) and str(folder / "config.json") in str(err.value)
    assert not (tmp_path / "ckpt").exists()
