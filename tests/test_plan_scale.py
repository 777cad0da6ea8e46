"""Memory at scale on paper (lmkit.plan.sharding, lmkit.plan.memory): lmkit's per-device figures
beside published ones, each row with its source, the setting, the tolerance and why.

Sources:
- ZeRO (Rajbhandari et al. 2020, https://arxiv.org/abs/1910.02054), Table 1 (p. 11): model states per
  device of 7.5B-, 128B- and 1T-parameter models with mixed-precision Adam (K = 12 bytes of
  optimizer state per parameter) under ZeRO-DP stages P_os, P_os+g, P_os+g+p at data-parallel degree
  Nd = 1 to 1,024, in GB; Section 5.4: "Without ZeRO, the memory consumption is equal to the first
  row in the table, regardless of the DP degree". Model states only: lmkit's ``model_state_bytes``.
  Every cell below was checked against the paper's own text (a text extraction of the arXiv PDF,
  Table 1 and Sections 5.1-5.4, read 2026-12-07), not typed from memory.
- torchtitan's Llama 3.1 benchmarks on H100s (https://github.com/pytorch/torchtitan/blob/main/
  benchmarks/llama3_h100_202412_torchtitan.md, also docs/performance.md; Tables 1, 3 and 4), each
  figure the caching allocator's reserved peak, which counts everything a GPU holds:
  - Llama 3.1 8B, FSDP, local batch 2, sequence 8192, bf16 compute, selective activation
    checkpointing: 82.4 GiB per GPU on 8 GPUs (Table 1), 67.0 GiB on 128 (Table 3).
  - Llama 3.1 70B, 2D: FSDP 32 x TP 8 on 256 GPUs, local batch 16 (global 512), sequence 8192 (the
    llama3_70b.toml preset's), full activation checkpointing, torch.compile and Float8 linears:
    71.9 GiB, and 67.6 GiB with asynchronous TP (Table 4).
"""

from __future__ import annotations

import pytest

from lmkit.cli import main
from lmkit.errors import LmkitError
from lmkit.plan.compute import count_params
from lmkit.plan.memory import model_state_bytes
from lmkit.plan.sharding import SCALE_PRESETS, gathered_layer_bytes, hybrid_shard_memory, scale_preset, scale_table

GiB = 2.0**30
STAGES = ("zero1", "zero2", "zero3")  # the paper's P_os, P_os+g, P_os+g+p
ZERO_MODELS = (7.5e9, 128e9, 1e12)  # the table's 7.5B, 128B and 1T models
# Table 1 as printed, one row per DP degree Nd: for each model, P_os, P_os+g, P_os+g+p (GB)
ZERO_TABLE_1 = {
    1: ("120", "120", "120", "2048", "2048", "2048", "16000", "16000", "16000"),
    4: ("52.5", "41.3", "30", "896", "704", "512", "7000", "5500", "4000"),
    16: ("35.6", "21.6", "7.5", "608", "368", "128", "4750", "2875", "1000"),
    64: ("31.4", "16.6", "1.88", "536", "284", "32", "4187", "2218", "250"),
    256: ("30.4", "15.4", "0.47", "518", "263", "8", "4046", "2054", "62.5"),
    1024: ("30.1", "15.1", "0.12", "513", "257", "2", "4011", "2013", "15.6"),
}
ZERO_CELLS = [
    (nd, psi, stage, printed)
    for nd, row in ZERO_TABLE_1.items()
    for i, printed in enumerate(row)
    for psi, stage in [(ZERO_MODELS[i // 3], STAGES[i % 3])]
]


def _gb(psi: float, sharding: str, nd: int) -> float:
    return sum(model_state_bytes(psi, "bf16", sharding, nd).values()) / 1e9  # 2 + 2 + 12 bytes per parameter


@pytest.mark.parametrize(("nd", "psi", "stage", "printed"), ZERO_CELLS)
def test_model_states_match_the_zero_papers_table(nd: int, psi: float, stage: str, printed: str) -> None:
    # Tolerance from how the cell is printed: the 7.5B column rounds to the nearest last digit
    # (30.35 -> 30.4, 41.25 -> 41.3), the larger models' whole GB are cut, not rounded (4046.875 ->
    # 4046, 513.5 -> 513), so a printed p stands for a value in [p - half a unit, p + one unit).
    unit = 10.0 ** -len(printed.partition(".")[2])
    got = _gb(psi, stage, nd)
    assert float(printed) - unit / 2 <= got < float(printed) + unit, (nd, psi, stage, got)


@pytest.mark.parametrize("nd", sorted(ZERO_TABLE_1))
def test_without_zero_every_device_holds_the_first_row(nd: int) -> None:
    # Section 5.4: without ZeRO the memory is the Nd = 1 row whatever the DP degree (Figure 1: 120 GB
    # for 7.5B at Nd = 64); those cells are whole numbers, 16 bytes per parameter exactly.
    for i, psi in enumerate(ZERO_MODELS):
        assert _gb(psi, "ddp", nd) == pytest.approx(float(ZERO_TABLE_1[1][3 * i]), rel=1e-12)


def test_llama_3_8b_on_8_and_128_gpus_beside_torchtitans_measurements() -> None:
    cfg = SCALE_PRESETS["8B"]
    assert count_params(cfg).total == pytest.approx(8.03e9, rel=1e-3)  # Llama 3.1 8B's published count
    on = {n: hybrid_shard_memory(cfg, None, 2, 8192, "bf16", n, True, None, 0.0, 0.0) for n in (8, 128)}
    # Row 1: 8 -> 128 GPUs at the same local batch, published 82.4 - 67.0 = 15.4 GiB. The activations,
    # the loss and the gathered layers are the same on both, so the difference is the 15/16 of the
    # model states that 128 shards no longer hold (16 bytes per parameter: torchtitan keeps fp32
    # sharded weights and gradients and Adam's two moments). Tolerance 15%: torchtitan reports the
    # caching allocator's reserved peak, whose fragmentation grows with the size of the blocks freed
    # and reused, which the plan does not model (lmkit: 14.0 GiB, 9% under).
    assert (on[8]["total"] - on[128]["total"]) / GiB == pytest.approx(82.4 - 67.0, rel=0.15)
    # Row 2: 82.4 GiB on 8 GPUs with selective checkpointing (some of each layer's tensors kept) lies
    # between lmkit's full checkpointing (only layer inputs kept: 29 GiB) and none (119 GiB). No
    # closer figure: torchtitan's model materialises the full logits for its loss and keeps a bf16
    # residual stream, lmkit's fuses the loss and keeps an fp32 one.
    none = hybrid_shard_memory(cfg, None, 2, 8192, "bf16", 8, False, None, 0.0, 0.0)
    assert on[8]["total"] / GiB < 82.4 < none["total"] / GiB


def test_llama_3_70b_on_fsdp_32_by_tp_8_beside_torchtitans_measurements() -> None:
    cfg = SCALE_PRESETS["70B"]
    n = float(count_params(cfg).total)
    assert n == pytest.approx(70.6e9, rel=1e-3)  # Llama 3.1 70B's published count
    plan = hybrid_shard_memory(cfg, None, 16, 8192, "bf16", 256, True, None, 0.0, 0.0, tensor_parallel=8)
    # What the 2D layout itself decides, exactly: ZeRO's 16 bytes per parameter over all 256 devices
    # (1/8 of each layer by TP, that 1/8 over 32 FSDP ranks), the gathered layer of a TP shard (two
    # layers' bf16 weights + one layer's fp32 gradients, over 8), and activations and loss of one
    # device split 8 ways (sequence-parallel layer inputs).
    assert plan["weights"] + plan["gradients"] + plan["optimizer"] == pytest.approx(16 * n / 256)
    assert plan["gathered"] == pytest.approx(n / 80 / 8 * 8)
    one = hybrid_shard_memory(cfg, None, 16, 8192, "bf16", 32, True, None, 0.0, 0.0, tensor_parallel=1)
    assert plan["activations"] == pytest.approx(one["activations"] / 8)
    # Table 4: 71.9 GiB (2D), 67.6 GiB (2D + AsyncTP); lmkit 52.7 GiB, 27% and 22% under. Two known
    # differences of the models roughly cancel, in GiB per GPU: torchtitan keeps bf16 layer inputs
    # where lmkit keeps an fp32 residual stream (lmkit about +20), and materialises its
    # vocabulary-parallel logits in bf16, in fp32 and their log-softmax, where lmkit's fused loss
    # keeps one block (lmkit about -19). The rest, about 19 GiB, the plan does not account for: the
    # caching allocator's reserved but free blocks, communication buffers, Float8's and compile's
    # workspaces; AsyncTP alone, which changes no tensor lmkit counts, moves the figure by 4.3 GiB.
    # Tolerance 30% for that; the exact checks above catch a wrong layout (states sharded over the
    # 32 FSDP ranks only: +29 GiB; activations not split by TP: +330 GiB).
    for published in (71.9, 67.6):
        assert plan["total"] / GiB == pytest.approx(published, rel=0.30)
    # t = 1 is plain FSDP, and the degree must divide the devices
    assert one["total"] == pytest.approx(
        hybrid_shard_memory(cfg, None, 16, 8192, "bf16", 32, True, None, 0, 0)["total"]
    )
    with pytest.raises(LmkitError, match="tensor-parallel degree \\(8\\) must divide the number of devices \\(12\\)"):
        hybrid_shard_memory(cfg, n_gpus=12, tensor_parallel=8)


def test_hybrid_sharding_holds_what_a_full_shard_over_its_group_holds() -> None:
    cfg = SCALE_PRESETS["70B"]
    n = float(count_params(cfg).total)
    hybrid = hybrid_shard_memory(cfg, n, 1, 4096, "bf16", 1024, True, 64)
    full64 = hybrid_shard_memory(cfg, n, 1, 4096, "bf16", 64, True)
    assert hybrid["total"] == full64["total"]
    states = hybrid["weights"] + hybrid["gradients"] + hybrid["optimizer"]
    assert states == pytest.approx(16 * n / 64)  # ZeRO's 16Ψ/Nd over the group alone
    full = hybrid_shard_memory(cfg, n, 1, 4096, "bf16", 1024, True)
    assert full["weights"] + full["gradients"] + full["optimizer"] == pytest.approx(16 * n / 1024)
    # the gathered layer (two layers' bf16 weights + one layer's fp32 gradients) does not shrink with n
    assert full["gathered"] == hybrid["gathered"] == pytest.approx(n / 80 * 8)
    assert gathered_layer_bytes(cfg, n, "bf16", "zero2", 1024) == 0.0
    assert gathered_layer_bytes(cfg, n, "bf16", "fsdp", 1) == 0.0
    with pytest.raises(LmkitError, match="must divide"):
        hybrid_shard_memory(cfg, n, n_gpus=100, shard_group=8)


def test_the_scale_table_covers_1b_7b_70b_on_8_64_and_1024_devices() -> None:
    rows = scale_table(device="H100")  # 80 GiB
    got = {(r["model"], r["devices"], r["layout"]): r for r in rows}
    for model in ("1B", "7B", "70B"):
        assert (model, 8, "full shard") in got and (model, 8, "hybrid shard 8") not in got
        for n in (64, 1024):
            full, hybrid = got[(model, n, "full shard")], got[(model, n, "hybrid shard 8")]
            assert hybrid["model_states"] == pytest.approx(got[(model, 8, "full shard")]["model_states"])
            assert full["model_states"] < hybrid["model_states"]
            two_d = got[(model, n, "FSDP x TP 8")]  # 1/8 of each layer per device, sharded over n/8 ranks
            assert two_d["model_states"] == pytest.approx(full["model_states"])
            assert two_d["gathered"] == pytest.approx(full["gathered"] / 8)
            assert two_d["activations"] == pytest.approx(full["activations"] / 8)
    assert got[("7B", 8, "full shard")]["params"] == pytest.approx(6.74e9, rel=1e-3)  # Llama 2 7B
    assert got[("70B", 1024, "full shard")]["fits"] and not got[("70B", 1024, "hybrid shard 8")]["fits"]
    with pytest.raises(LmkitError, match="no scale preset"):
        scale_preset("13B")
    with pytest.raises(LmkitError, match="--micro-batch must be 1 to"):
        scale_table(micro_batch=0)
    with pytest.raises(LmkitError, match="--gpu must be one of .* got 'B200'"):
        scale_table(device="B200")
    assert all(r["fits"] is None for r in scale_table(("1B",), (8,), device="here"))


def test_lmkit_plan_scale_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--scale", "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    for text in ("1B", "7B", "70B", "1,024", "hybrid shard 8", "full shard", "FSDP x TP 8", "H100"):
        assert text in out, text
