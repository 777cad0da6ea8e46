"""Shared layers: the hand-written pieces equal the library paths they replace, in value and gradient.

The chunked linear cross-entropy against logits then ``F.cross_entropy``; the CPU RMSNorm against
``F.rms_norm``; biased attention against ``F.scaled_dot_product_attention`` with the same mask. The
decoder variants' pieces against their definitions and transformers: scaled rotary frequencies, ALiBi
slopes, partial rotary positions, grouped-query attention as attention with repeated key/value heads.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmkit.model_variants import RopeScaling
from lmkit.models.layers import Attention, RMSNorm, _RMSNorm, biased_attention
from lmkit.models.loss import _WORKSPACE, linear_cross_entropy
from lmkit.models.positions import alibi_slopes, apply_rope, rope_inv_freq, rope_tables


@pytest.mark.parametrize("chunk", [7, 64, 1024])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_cross_entropy_matches_logits_then_cross_entropy(chunk: int, with_bias: bool) -> None:
    torch.manual_seed(0)
    N, C, V = 50, 16, 97
    hidden = torch.randn(N, C, dtype=torch.float64).float().requires_grad_()
    weight = (torch.randn(V, C) * 0.5).requires_grad_()
    bias = torch.randn(V).requires_grad_() if with_bias else None
    targets = torch.randint(0, V, (N,))
    targets[::5] = -100  # unscored positions
    ours = linear_cross_entropy(hidden, weight, targets, bias=bias, chunk=chunk)
    grads = torch.autograd.grad(ours * 3.0, [hidden, weight] + ([bias] if bias is not None else []))
    ref = F.cross_entropy(hidden @ weight.t() + (bias if bias is not None else 0.0), targets, ignore_index=-100)
    ref_grads = torch.autograd.grad(ref * 3.0, [hidden, weight] + ([bias] if bias is not None else []))
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-6, rtol=1e-4)


def test_linear_cross_entropy_is_exact_for_confident_wrong_predictions() -> None:
    """A target whose probability underflows fp32 still gets its true (large) loss, not inf."""
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    weight = torch.tensor([[200.0, 0.0], [0.0, 200.0], [0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([1, 2])  # row 0 puts all its mass on token 0: p(target) = e^-200
    ours = linear_cross_entropy(hidden, weight, targets)
    ref = F.cross_entropy(hidden @ weight.t(), targets)
    assert torch.isfinite(ours) and torch.allclose(ours, ref, rtol=1e-6)
    ours.backward()
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()


def test_linear_cross_entropy_without_scored_positions_is_zero() -> None:
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(10, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().sum().item() == 0.0 and weight.grad.abs().sum().item() == 0.0


def test_linear_cross_entropy_reuses_its_scratch_block() -> None:
    """The (rows × vocab) block is kept between calls, so a training step maps no fresh memory for it."""
    hidden = torch.randn(40, 8, requires_grad=True)
    weight = torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 30, (40,))
    linear_cross_entropy(hidden, weight, targets, chunk=16).backward()
    block = _WORKSPACE[(hidden.device, torch.float32)]
    first = linear_cross_entropy(hidden, weight, targets, chunk=16)
    assert _WORKSPACE[(hidden.device, torch.float32)].data_ptr() == block.data_ptr()
    assert torch.allclose(first, F.cross_entropy(hidden @ weight.t(), targets), rtol=1e-6)


def test_linear_cross_entropy_under_bf16_autocast_is_as_close_to_fp32_as_autocasts_own_path() -> None:
    """Under autocast the chunks run their three matmuls in bf16 (the weight's gradient too, summed over
    chunks in fp32): loss and gradients stay as close to the fp32 truth as autocast's logits-then-loss."""
    torch.manual_seed(0)
    N, C, V = 300, 64, 500
    hidden = torch.randn(N, C).requires_grad_()
    weight = (torch.randn(V, C) * 0.3).requires_grad_()
    targets = torch.randint(0, V, (N,))
    targets[::7] = -100
    truth = F.cross_entropy(hidden @ weight.t(), targets)
    true_grads = torch.autograd.grad(truth, [hidden, weight])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, weight, targets, chunk=64)
        theirs = F.cross_entropy(F.linear(hidden, weight).float(), targets)
    our_grads = torch.autograd.grad(ours, [hidden, weight])
    their_grads = torch.autograd.grad(theirs, [hidden, weight])
    assert (
        ours.dtype == torch.float32 and abs(ours.item() - truth.item()) <= 2 * abs(theirs.item() - truth.item()) + 1e-3
    )
    for o, t, true in zip(our_grads, their_grads, true_grads):
        assert o.dtype == torch.float32
        assert (o - true).norm() <= 1.5 * (t - true).norm()  # bf16 rounding, no worse than autocast's


@pytest.mark.parametrize("shape", [(4, 7, 16), (3, 32)])
def test_rms_norm_matches_torch_in_value_and_gradient(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    norm = RMSNorm(shape[-1], eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(shape) * 3).requires_grad_()
    dy = torch.randn(shape)
    ours = norm(x)
    gx, gw = torch.autograd.grad(ours, [x, norm.weight], dy)
    ref = F.rms_norm(x, (shape[-1],), norm.weight, 1e-6)
    rx, rw = torch.autograd.grad(ref, [x, norm.weight], dy)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(gx, rx, atol=1e-5) and torch.allclose(gw, rw, atol=1e-5)
    # the gradient is the true derivative, not only what F.rms_norm's autograd says
    x64 = x.detach().double().requires_grad_()
    w64 = norm.weight.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(_RMSNorm.apply, (x64, w64, 1e-6))


@pytest.mark.parametrize(
    "bias_shape,causal",
    [
        ((1, 3, 9, 9), False),  # T5 encoder: one bias for the whole batch
        ((2, 3, 9, 9), False),  # bias with padding folded in, per sequence
        ((1, 3, 9, 9), True),  # T5 decoder: −inf above the diagonal
        ((9, 9), True),  # a plain 2-D additive mask
        ((2, 1, 1, 9), False),  # a per-key padding mask, broadcast over heads and queries
    ],
)
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_biased_attention_matches_sdpa(bias_shape: tuple[int, ...], causal: bool, scale: float) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 9, 3, 8).transpose(1, 2).requires_grad_() for _ in range(3))  # (B, H, T, hd) views
    bias = torch.randn(bias_shape, requires_grad=True)
    mask = bias
    if causal:
        mask = bias.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    if bias_shape == (2, 1, 1, 9):
        mask = bias.masked_fill(torch.tensor([[False] * 9, [False] * 6 + [True] * 3])[:, None, None, :], float("-inf"))
    dy = torch.randn(2, 3, 9, 8)
    ours = biased_attention(q, k, v, mask, scale)
    grads = torch.autograd.grad(ours, [q, k, v, bias], dy, retain_graph=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    ref_grads = torch.autograd.grad(ref, [q, k, v, bias], dy)
    assert torch.allclose(ours, ref, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape and torch.allclose(g, r, atol=1e-5)


def test_biased_attention_runs_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 3, 9, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = biased_attention(q @ torch.eye(8), k @ torch.eye(8), v @ torch.eye(8), bias, 1.0)
    out.float().sum().backward()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ref, atol=5e-2)
    assert bias.grad is not None and bias.grad.dtype == torch.float32 and torch.isfinite(bias.grad).all()


# --------------------------------------------------------------------------- positions and attention variants


@pytest.mark.parametrize(
    "scaling",
    [
        RopeScaling("linear", factor=4.0),
        RopeScaling("llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_len=64),
    ],
)
def test_rope_scaling_equals_transformers_frequencies(scaling: RopeScaling) -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params: dict[str, object] = {"rope_type": scaling.type, "rope_theta": 500000.0, "factor": scaling.factor}
    if scaling.type == "llama3":
        params.update(
            low_freq_factor=scaling.low_freq_factor,
            high_freq_factor=scaling.high_freq_factor,
            original_max_position_embeddings=scaling.original_max_len,
        )
    config = LlamaConfig(hidden_size=64, num_attention_heads=2, rope_parameters=params)
    theirs, _ = ROPE_INIT_FUNCTIONS[scaling.type](config, "cpu")
    ours = rope_inv_freq(32, 500000.0, scaling)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, rope_inv_freq(32, 500000.0))  # the scaling changed something


@pytest.mark.parametrize("heads", [1, 4, 6, 12, 16])
def test_alibi_slopes_equal_blooms(heads: int) -> None:
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    assert torch.equal(alibi_slopes(heads), _get_alibi_slopes(heads, torch.device("cpu")))


def test_partial_rotary_turns_only_the_first_dimensions() -> None:
    x = torch.randn(2, 3, 5, 16)  # (B, H, T, hd)
    cos, sin = rope_tables(4, 5)  # 4 of 16 dimensions rotate
    y = apply_rope(x, cos, sin)
    assert torch.equal(y[..., 4:], x[..., 4:])
    assert torch.allclose(y[..., :4], apply_rope(x[..., :4], cos, sin))
    assert not torch.allclose(y[:, :, 1:, :4], x[:, :, 1:, :4])


@pytest.mark.parametrize("turned", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_heads_equals_splitting_heads_then_apply_rope(dtype: torch.dtype, turned: bool) -> None:
    """The stacked projection's heads, turned in two passes each way, equal the composed ops in value and
    gradient; under bf16 (a bf16 projection, fp32 heads) the gradient comes back in bf16, rounded once."""
    from lmkit.models.positions import rope_heads

    torch.manual_seed(0)
    B, T, H, hd = 2, 7, 3, 8
    cos, sin = (t[2 : 2 + T] for t in rope_tables(hd, 16, theta=100.0))  # positions 2..8
    qkv = torch.randn(B, T, 3 * H * hd).to(dtype).requires_grad_()
    ours = rope_heads(qkv, H, (cos, sin) if turned else None, torch.float32)
    heads = qkv.view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4).float()  # (3, B, H, T, hd)
    ref = torch.cat([apply_rope(heads[:2], cos, sin), heads[2:]]) if turned else heads
    assert ours.shape == (3, B, H, T, hd) and ours.is_contiguous() and torch.allclose(ours, ref, atol=1e-6)
    dy = torch.randn(3, B, H, T, hd)
    (ours_grad,), (ref_grad,) = torch.autograd.grad(ours, qkv, dy), torch.autograd.grad(ref, qkv, dy)
    assert ours_grad.dtype == ref_grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2  # bf16: one rounding of the same fp32 value
    assert torch.allclose(ours_grad.float(), ref_grad.float(), atol=tol, rtol=tol)


def test_rope_heads_gradient_is_the_rotation_transposed() -> None:
    from lmkit.models.positions import rope_heads

    cos, sin = (t.double()[:5] for t in rope_tables(8, 5, theta=10.0))
    qkv = torch.randn(2, 5, 3 * 2 * 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: rope_heads(x, 2, (cos, sin), torch.float64), qkv)


@pytest.mark.parametrize("bias", ["causal", "learned"])
def test_attention_trains_under_bf16_autocast_within_rounding_of_fp32(bias: str) -> None:
    """Under CPU autocast the stacked projection runs in bf16; causal attention reads fp32 heads (made
    in the head-major copy) and a learned bias's attention stays bf16: outputs and gradients (the
    bias's too) stay within bf16 rounding of the fp32 module's."""
    torch.manual_seed(0)
    attn = Attention(32, 4)
    x = torch.randn(2, 9, 32, requires_grad=True)
    cos, sin = (t[:9] for t in rope_tables(8, 9))
    table = torch.randn(1, 4, 9, 9, requires_grad=True)
    kw = {"rope": (cos, sin), "causal": True} if bias == "causal" else {"attn_bias": table}
    wrt = [x, attn.q_proj.weight] + ([table] if bias == "learned" else [])
    ref = attn(x, **kw)
    ref_grads = torch.autograd.grad(ref.square().sum(), wrt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, **kw)
        q, k, v = attn.project_qkv(x, (cos, sin), torch.float32)
    assert q.dtype == k.dtype == v.dtype == torch.float32 and q.is_contiguous()
    grads = torch.autograd.grad(out.float().square().sum(), wrt)
    assert torch.allclose(out.float(), ref, atol=5e-2, rtol=5e-2)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == torch.float32 and (g - r).norm() <= 3e-2 * r.norm()


def test_grouped_query_attention_is_attention_with_shared_key_value_heads() -> None:
    torch.manual_seed(0)
    gqa = Attention(24, 6, n_kv_heads=2, head_dim=8)  # query width 48 != d_model
    full = Attention(24, 6, head_dim=8)
    with torch.no_grad():
        full.q_proj.weight.copy_(gqa.q_proj.weight)
        full.o_proj.weight.copy_(gqa.o_proj.weight)
        # query head h reads key/value head h // 3: repeat each key/value head's rows 3 times
        for lin, src in ((full.k_proj, gqa.k_proj), (full.v_proj, gqa.v_proj)):
            lin.weight.copy_(src.weight.view(2, 1, 8, 24).expand(2, 3, 8, 24).reshape(48, 24))
    x = torch.randn(2, 7, 24, requires_grad=True)
    ours, ref = gqa(x, causal=True), full(x, causal=True)  # on CPU gqa's kernel reads shared heads
    assert torch.allclose(ours, ref, atol=1e-6)
    dy = torch.randn_like(ref)
    assert torch.allclose(*(torch.autograd.grad(y, x, dy)[0] for y in (ours, ref)), atol=1e-6)
    out, w = gqa(x, causal=True, return_weights=True)
    assert w.shape == (2, 6, 7, 7) and torch.allclose(out, gqa(x, causal=True), atol=1e-6)


def test_alibi_attention_adds_slope_times_key_position_causally() -> None:
    torch.manual_seed(0)
    attn = Attention(16, 4, alibi=True)
    x = torch.randn(1, 6, 16)
    _, w = attn(x, causal=True, return_weights=True)
    q = attn.split_heads(attn.q_proj(x))
    k = attn.split_heads(attn.k_proj(x))
    scores = q @ k.transpose(-2, -1) / 2.0 + alibi_slopes(4).view(4, 1, 1) * torch.arange(6.0)  # hd 4: scale 1/2
    scores = scores.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
    assert torch.allclose(w, scores.softmax(-1), atol=1e-6)
    assert "alibi" not in attn.state_dict()  # recomputed, never stored
