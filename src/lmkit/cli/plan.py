"""The planning command ``plan``: flags, runner and printing.

``add_plan(sub)`` declares its flags, with help that teaches, and ``_run_plan(args)`` asks the
domain modules for data (``lmkit.plan``) and prints it as tables or one JSON object.
``lmkit.train.calibrate`` (``--measure``) loads only when asked for, so ``lmkit --help`` stays
instant. (``lmkit numerics`` lives in ``lmkit.cli.numerics``.)
"""

from __future__ import annotations

import argparse
from typing import Any

from lmkit.cli.common import add_json, add_scaling_law, print_json
from lmkit.errors import LmkitError
from lmkit.models.checkpoint import load_model_and_train
from lmkit.plan.baseline import finish_baseline, runtime_baseline
from lmkit.plan.chinchilla import ABOUT_RIGHT_BAND, TOKENS_PER_PARAM, known_models_table, load_scaling_law
from lmkit.plan.make import make_plan
from lmkit.plan.measure import HERE_WORDS, available_memory_bytes, memory_track_record, this_machine
from lmkit.plan.memory import choose_heap
from lmkit.plan.sharding import scale_table
from lmkit.plan.units import parse_count


def add_plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="memory, FLOPs, GPU-hours and Chinchilla-optimal size of a model or a compute budget",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Plan a pre-training run before spending compute on it.\n\n"
        "Give a model (--params 1B, or --config run.yaml / a checkpoint folder for exact figures), "
        "tokens (--tokens 20B), and/or a budget (--flops, --pf-days, or --gpu-hours with --gpu). "
        "Whatever is missing is derived: a budget alone gets the compute-optimal model by "
        "Chinchilla's 20 tokens per parameter; a model alone gets 20 tokens per parameter (or its "
        "run config's stop conditions). With --scaling-law FIT.json your own fitted law replaces the "
        "20 in all of these.\n\n"
        "Reported: parameters (embedding / non-embedding), FLOPs per token (6N + attention) and in "
        "total, PF-days (1 PF-day = 8.64e19 FLOPs), device-hours on V100/A100/H100/H200 (and, with "
        "--this-machine, on this machine's measured matmul peak in the precision a run on it uses: "
        "fp32 and bf16 are both measured, and train.precision auto picks bf16 only where it is "
        "measurably faster) at a stated utilisation "
        "(--utilisation); memory of the weights in fp32/fp16/bf16/int8, training memory by the usual "
        "rule of thumb (4 bytes of fp32 weights + ≈ 20 for gradients, Adam states and activations: "
        "≈ 24 bytes/parameter) and precisely per device (weights + gradients + Adam "
        "states sharded by --sharding, activations of one micro-batch, the loss, the runtime) with "
        "whether that fits in the memory of one --gpu and, if not, what makes it fit (activation "
        "checkpointing, a smaller micro-batch, sharding, tensor parallelism) with the memory of each, "
        "inference memory with the KV cache; the Chinchilla-optimal size for the budget by the rule "
        "and by the parametric fit L(N,D) = E + A/N^a + B/D^b (Hoffmann et al.'s unrounded "
        "coefficients, or --fit epoch for Epoch AI's replication), with its predicted loss and the "
        "optimal tokens for the model.\n"
        "Config values can be overridden with dotted flags (--model.d_model 512).\n\n"
        "examples:\n"
        "  lmkit plan --params 1B                      weights, training memory, optimal tokens\n"
        "  lmkit plan --flops 5.76e23                  Chinchilla's budget -> ~70B params, 1.4T tokens\n"
        "  lmkit plan --gpu-hours 1000 --gpu H100      what 1,000 H100-hours buy\n"
        "  lmkit plan --params 70B --gpu A100 --gpus 2048 --sharding fsdp --seq-len 4096\n"
        "                                              does it fit on an A100? what makes it fit\n"
        "  lmkit plan --config gpu-124m --gpus 8 --sharding fsdp --json   a shipped recipe, 8 GPUs\n"
        "  lmkit plan --measure tiny                   time a few real steps on this machine, predict the run\n"
        "  lmkit plan --known-models                   GPT-3, Chinchilla, LLaMA ... against the rule\n"
        "  lmkit plan --scale --gpu H100               1B / 7B / 70B on 8, 64, 1,024 devices: FSDP, HSDP, FSDP x TP",
    )
    p.add_argument("--params", default=None, help="model size: 7e9, 1.5B, 125M (instead of --config); 1 to 1e15")
    p.add_argument("--tokens", default=None, help="training tokens: 300B, 1.4T, 2e12; 1 to 1e17")
    p.add_argument(
        "--config",
        default=None,
        help="run YAML with a model section (and train section), or a checkpoint folder / its config.json",
    )
    p.add_argument("--flops", default=None, help="compute budget in FLOPs, e.g. 5.76e23; 1 to 1e33 (as every budget)")
    p.add_argument("--pf-days", default=None, help="compute budget in petaFLOP/s-days (1 PF-day = 8.64e19 FLOPs)")
    p.add_argument("--gpu-hours", default=None, help="compute budget in device-hours of --gpu at --utilisation")
    p.add_argument(
        "--gpu",
        default="A100",
        help="accelerator for --gpu-hours and the fits / does-not-fit verdict "
        "on its memory: V100 (32 GiB), A100, H100 (80 GiB), H200 (141 GiB), "
        "or 'here' (this machine, measured) (default A100)",
    )
    p.add_argument(
        "--gpus", type=int, default=1, help="number of devices the run uses (memory is per device), 1 to 1,048,576"
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="training context length, 1 to 16,777,216 (default: the config's, or 2048)",
    )
    p.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="sequences per forward pass per device, 1 to 16,777,216 (default: the config's, or 1)",
    )
    p.add_argument(
        "--sharding",
        default="ddp",
        choices=["ddp", "zero1", "zero2", "zero3", "fsdp"],
        help="what is split across devices: nothing (ddp), optimizer states (zero1), + gradients "
        "(zero2), + weights (zero3 = fsdp) (default ddp)",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="training precision (default: the config's, its auto as on --gpu: bf16 on a GPU, "
        "measured on this machine; bf16 with --params)",
    )
    p.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="keep only each layer's input and recompute the rest in the backward pass",
    )
    p.add_argument(
        "--fit",
        default="chinchilla",
        choices=["chinchilla", "epoch"],
        help="parametric loss fit: Hoffmann et al. 2022 or Epoch AI's 2024 replication",
    )
    add_scaling_law(p, "plan with", "--fit")
    p.add_argument(
        "--utilisation",
        type=float,
        default=0.4,
        help="fraction of the peak FLOP/s a run achieves (MFU) for device-hours, 0.0001 to 1 (default 0.4)",
    )
    p.add_argument(
        "--this-machine",
        action="store_true",
        help="also time the run on this machine's measured "
        "fp32 and bf16 matmul peaks (a short measurement, "
        "made each time this flag is given)",
    )
    p.add_argument(
        "--known-models",
        action="store_true",
        help="table of well-known models marked under-trained / about right / over-trained",
    )
    p.add_argument(
        "--scale",
        action="store_true",
        help="memory per device of Llama-shaped 1B / 7B / 70B models on 8, 64, 1,024 devices: FSDP full shard and hybrid "
        "(sharded within nodes of 8, replicated across), activation checkpointing, bf16 (--seq-len: 4096)",
    )
    p.add_argument(
        "--measure",
        default=None,
        metavar="CONFIG",
        help="run a few real training steps of this run config on this machine and predict the full "
        "run's wall time and memory from the measured throughput",
    )
    p.add_argument("--measure-steps", type=int, default=6, help="steps timed by --measure (default 6)")
    add_json(p)
    p.set_defaults(func=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    """``lmkit plan``: read flags, make the plan, print tables or one JSON object."""
    if args.measure:  # runs real training steps: lives beside the trainer, not in the pure maths
        return _run_measure(args)
    if args.scale:
        return _print_scale(args)
    overrides = getattr(args, "overrides", {}) or {}
    cfg = train = None
    source = None
    if args.config:
        cfg, train = load_model_and_train(args.config, overrides)
        source = f"{cfg.family} from {args.config}"
    elif overrides:
        raise LmkitError("dotted overrides (--model.x ...) need --config")
    if args.scaling_law:
        args.fit = load_scaling_law(args.scaling_law)
    nothing = (
        all(getattr(args, k) is None for k in ("params", "tokens", "flops", "pf_days", "gpu_hours")) and cfg is None
    )
    if args.known_models or nothing:
        if args.json and nothing:
            print_json({"known_models": known_models_table(args.fit)})
            return 0
        if not args.json:
            _print_known_models(args.fit)
        if nothing:
            if not args.json:
                print("\n(give --params, --config, --tokens or a budget to plan a run; see lmkit plan --help)")
            return 0
    on_here = args.gpu.strip().lower() in HERE_WORDS
    here = (
        this_machine(args.precision, cfg, train, args.micro_batch, args.seq_len, fresh=args.this_machine)
        if args.this_machine or on_here
        else None
    )  # --this-machine measures the precision probe anew
    precision = args.precision
    if precision is None and train is not None and train.precision == "auto":
        precision = here["precision"] if here is not None and on_here else "bf16"
    family = cfg.family if cfg is not None else "decoder"  # --params alone plans a decoder's shape
    runtime, runtime_source = runtime_baseline(family, measure=args.this_machine)
    memory = train.memory if train is not None else "auto"
    heap = None if not on_here else "lean" if memory == "lean" else "fast"  # the heap of a run on this CPU
    inputs: dict[str, Any] = dict(
        params=parse_count(args.params, "--params") if args.params is not None else None,
        tokens=parse_count(args.tokens, "--tokens") if args.tokens is not None else None,
        cfg=cfg,
        train=train,
        flops=parse_count(args.flops, "--flops") if args.flops is not None else None,
        budget_pf_days=parse_count(args.pf_days, "--pf-days") if args.pf_days is not None else None,
        budget_gpu_hours=parse_count(args.gpu_hours, "--gpu-hours") if args.gpu_hours is not None else None,
        gpu=args.gpu,
        n_gpus=args.gpus,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        sharding=args.sharding,
        precision=precision,
        checkpointing=True if args.activation_checkpointing else None,
        scaling_law=args.fit,
        utilisation=args.utilisation,
        this_machine_peak=here["peak_flops"] if here else None,
        source=source,
        runtime_bytes=runtime,
        finish_bytes=finish_baseline(family),
    )
    plan = make_plan(**inputs, heap=heap)
    if on_here:  # train.memory settled as a run here would settle it (lmkit.train.rss.settle_memory)
        fast = plan["memory"]["training_bytes"]
        heap, why = choose_heap(
            memory, fast, fast - plan["memory"]["training_breakdown"]["heap"], available_memory_bytes()
        )
        if heap == "lean" and memory != "lean":
            plan = make_plan(**inputs, heap=heap)
        plan["memory"]["training_settings"]["memory"] = heap
        plan["notes"].append(
            f"train.memory {heap} ({why}): the memory is the whole process's on this machine's "
            "CPU" + (", with the heap glibc's allocator keeps" if heap == "fast" else "")
        )
    if here is not None:
        plan["compute"]["this_machine"] = here
    if train is not None and train.precision == "auto" and args.precision is None and not on_here:
        plan["notes"].append(
            f"train.precision auto: planned in bf16 on {args.gpu} (a GPU with bf16); lmkit pretrain "
            "settles it on the machine it runs on (--gpu here plans for this one)"
        )
    plan["memory"]["runtime_source"] = runtime_source
    plan["memory"]["memory_track_record"] = memory_track_record()[-10:]
    if args.known_models:
        plan["known_models"] = known_models_table(args.fit)
    if args.json:
        print_json(plan)
    else:
        _print_plan(plan)
    return 0


def _run_measure(args: argparse.Namespace) -> int:
    """``lmkit plan --measure CONFIG``: real training steps timed on this machine, the whole run predicted."""
    from lmkit.config import load_run_config
    from lmkit.ship.card.figures import duration
    from lmkit.train.calibrate import measure

    cfg = load_run_config(args.measure, getattr(args, "overrides", {}) or {})
    rep = measure(cfg, steps=args.measure_steps, show_progress=not args.json)
    rep["config"] = str(args.measure)
    if args.json:
        print_json(rep)
        return 0
    r, m = rep["run"], rep["memory"]
    print(f"lmkit plan --measure {args.measure}: {cfg.model.family}, {rep['params']:,} parameters, on {rep['device']}")
    print(
        f"  measured   {rep['steps_measured']} steps after a warm-up: {rep['step_seconds_median']:.3f} s/step "
        f"(median), {rep['tokens_per_second']:,.0f} tokens/s, MFU {100 * rep['mfu']:.0f}% of "
        f"{rep['peak_flops'] / 1e9:,.0f} GFLOP/s ({rep['precision']} peak); precision {rep['precision_choice']}"
    )
    print(f"  the run    {r['steps']:,} steps ({r['stop']}) = {r['tokens']:,} tokens, {r['flops']:.3g} FLOPs")
    print(
        f"  wall time  {duration(r['wall_seconds'])} predicted = training {duration(r['train_seconds'])} + "
        f"evaluation {duration(r['eval_seconds'])} (data preparation and checkpoint writes not included)"
    )
    print(
        f"  memory     {m['measured_kind']}: {m['measured_bytes'] / 2**30:.2f} GiB; lmkit plan's estimate "
        f"{m['predicted_bytes'] / 2**30:.2f} GiB (measured/predicted {m['measured_over_predicted']:.2f})"
    )
    if m["predicted_breakdown"].get("heap"):
        print(
            f"             (train.memory {rep['memory_choice']}: the estimate counts "
            f"{_gb(m['predicted_breakdown']['heap'])} of heap glibc's allocator keeps)"
        )
    return 0


def _gb(x: float) -> str:
    if x >= 1e12:
        return f"{x / 1e12:,.2f} TB"
    if x >= 1e9:
        return f"{x / 1e9:,.2f} GB"
    return f"{x / 1e6:,.1f} MB"


def _num(x: float) -> str:
    for unit, v in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= v:
            return f"{x / v:,.3g}{unit}"
    return f"{x:,.3g}"


def _hours(h: float) -> str:
    if h * 60 < 1:
        return f"{h * 3600:,.2g} s"
    if h < 1:
        return f"{h * 60:,.1f} min"
    if h < 48:
        return f"{h:,.1f} h"
    return f"{h:,.0f} h ({h / 24:,.0f} days)"


def _print_known_models(fit: Any = "chinchilla") -> None:
    """The well-known models against the rule, as a table."""
    lo, hi = ABOUT_RIGHT_BAND
    print(
        f"Well-known models against Chinchilla's ≈20 tokens per parameter ('about right' = {lo:g}-{hi:g} "
        "tokens/parameter,\ni.e. within √2 of the compute-optimal size for the compute used; compute = 6·N·D):\n"
    )
    print(
        f"{'model':<14} {'params':>8} {'tokens':>8} {'tok/param':>9} {'FLOPs':>9} {'PF-days':>9} "
        f"{'rule N_opt':>10}  verdict"
    )
    for r in known_models_table(fit):
        print(
            f"{r['name']:<14} {_num(r['params']):>8} {_num(r['tokens']):>8} {r['tokens_per_param']:>9.1f} "
            f"{r['flops']:>9.2e} {r['pf_days']:>9,.0f} {_num(r['rule_optimal_params']):>10}  {r['verdict']}"
        )


def _print_plan(p: dict[str, Any]) -> None:
    """A plan (``make_plan``'s dict) as tables."""
    m, c, ch = p["memory"], p["compute"], p["chinchilla"]
    title = f"lmkit plan{': ' + p['source'] if p['source'] else ''}"
    print(title)
    print("=" * len(title))
    pb = p["params_breakdown"]
    extra = f" (embedding {pb['embedding']:,}, non-embedding {pb['non_embedding']:,})" if pb else ""
    print(f"parameters   {p['params']:,.0f}{extra}  [{p['params_source']}]")
    against = p["verdict_optimal_tokens_per_param"]
    verdict = p["verdict"] + ("" if against == TOKENS_PER_PARAM else f" (your law's optimum here: {against:.1f})")
    print(
        f"tokens       {p['tokens']:,.0f} = {p['tokens_per_param']:.1f} per parameter, {verdict}  "
        f"[{p['tokens_source']}]"
    )
    print(
        f"compute      {p['flops_per_token']:.4g} FLOPs/token at context {p['seq_len']} x {p['tokens']:.3g} tokens "
        f"= {p['flops']:.3e} FLOPs = {p['pf_days']:,.4g} PF-days   (6·N·D = {p['flops_6nd']:.3e})"
    )
    here = c.get("this_machine")
    measured_here = f"; this machine measured, {here['precision']}" if here else ""
    print(f"\ntime at {100 * c['utilisation']:.0f}% utilisation (dense 16-bit datasheet peaks{measured_here}):")
    for k, h in c["gpu_hours"].items():
        wall = f"   {_hours(c['wall_hours'][k])} on {c['gpus']}" if c["gpus"] > 1 else ""
        print(f"  {k:<13} {c['peak_flops'][k] / 1e12:8.3g} TFLOP/s   {_hours(h):>24} device-time{wall}")
    if here:
        print(
            f"  this machine's matmul peaks, measured: fp32 {here['fp32_flops'] / 1e9:,.0f} GFLOP/s, bf16 "
            f"{here['bf16_flops'] / 1e9:,.0f} GFLOP/s ({here['bf16_over_fp32']:.1f}×); a run here trains in "
            f"{here['precision']} ({here['precision_choice']})"
        )
    w = m["weights_bytes"]
    print("\nmemory")
    print(
        f"  weights      fp32 {_gb(w['fp32'])}   fp16 {_gb(w['fp16'])}   bf16 {_gb(w['bf16'])}   int8 {_gb(w['int8'])}"
    )
    print(f"  training, rule of thumb (4 B weights + 20 B/param): {_gb(m['training_rule_of_thumb_bytes'])}")
    s, t = m["training_settings"], m["training_breakdown"]
    print(
        f"  training, precise per device ({s['precision']}, {s['sharding']} on {s['gpus']}, micro-batch "
        f"{s['micro_batch']} x {s['seq_len']}{', activation checkpointing' if s['activation_checkpointing'] else ''}):"
        f" {_gb(t['total'])}"
    )
    print(
        f"      weights {_gb(t['weights'])} + gradients {_gb(t['gradients'])} + {s['optimizer']} {_gb(t['optimizer'])}"
        f" + activations {_gb(t['activations'])} + loss {_gb(t['loss'])} + runtime {_gb(t['runtime'])}"
        f" + evaluation {_gb(t['evaluation'])} + run's end {_gb(t['finish'])}"
        + (f" + heap {_gb(t['heap'])} (freed blocks glibc's allocator keeps)" if t.get("heap") else "")
        + (f" − {_gb(-t['not_at_once'])} (never all there at once)" if t["not_at_once"] else "")
    )
    if m.get("runtime_source"):
        print(f"      runtime: {m['runtime_source']}")
    if m.get("memory_track_record"):
        errs = m["memory_track_record"]
        print(
            f"      how sure: the last {len(errs)} runs here measured {100 * min(errs):+.0f}% to "
            f"{100 * max(errs):+.0f}% of lmkit's prediction (peak RSS of the process)"
        )
    print(
        f"      activations {_gb(t['activations'])}: lmkit's model, fused attention (no T×T scores kept), "
        "fp32 residual stream"
    )
    print(
        f"      Korthikanti et al.'s 16-bit GPT for this shape: {_gb(m['korthikanti_activation_bytes'])} without fused "
        f"attention (scores, softmax, dropout kept), {_gb(m['korthikanti_fused_attention_activation_bytes'])} with it"
    )
    if m.get("on_device"):
        _print_memory_verdict(m["on_device"], s["gpus"])
    i, st = m["inference_breakdown"], m["inference_settings"]
    print(
        f"  inference ({st['weights']} weights, batch {st['batch']} x {st['context']} context): {_gb(i['total'])}"
        f" = weights {_gb(i['weights'])} + KV cache {_gb(i['kv_cache'])} + workspace {_gb(i['workspace'])}"
        f" + runtime {_gb(i['runtime'])}"
    )
    fit = ch["fit"]
    print(f"\nChinchilla, for a budget of {ch['budget_flops']:.3e} FLOPs:")
    print(f"  rule (20 tokens/param)   params {_num(ch['rule']['params']):>8}   tokens {_num(ch['rule']['tokens']):>8}")
    print(
        f"  fit ({fit['name']})"
        + " " * max(0, 15 - len(fit["name"]))
        + f"params {_num(fit['params']):>8}   tokens {_num(fit['tokens']):>8}   predicted loss {fit['loss']:.3f}"
        f"   ({fit['tokens_per_param']:.1f} tokens/param)"
    )
    print(
        f"  this plan's predicted loss {fit['loss_of_plan']:.3f}; for {_num(p['params'])} parameters the optimal "
        f"tokens are {_num(ch['rule_tokens_for_params'])} (rule) / {_num(fit['optimal_tokens_for_params'])} (fit)"
    )
    for note in p["notes"]:
        print(f"\nnote: {note}")


def _print_scale(args: argparse.Namespace) -> int:
    """``lmkit plan --scale``: the scale-out table (``lmkit.plan.sharding``), or its rows as JSON."""
    rows = scale_table(micro_batch=args.micro_batch, seq_len=args.seq_len, precision=args.precision, device=args.gpu)
    if args.json:
        print_json({"rows": rows, "device": args.gpu})
        return 0
    mb, seq, prec = args.micro_batch or 1, args.seq_len or 4096, args.precision or "bf16"
    print(f"per device ({prec}, activation checkpointing, micro-batch {mb} x {seq}); fits on one {args.gpu}")
    print("  model  devices  layout          model states  gathered  activations      total  fits")
    for r in rows:
        fits = "" if r["fits"] is None else "yes" if r["fits"] else "no"
        row = f"  {r['model']:>5} {r['devices']:>8,}  {r['layout']:<15} {_gb(r['model_states']):>12} {_gb(r['gathered']):>9}"
        print(f"{row} {_gb(r['activations']):>12} {_gb(r['total']):>10}  {fits}")
    print("  (states: 16 B/param over the shard group; gathered: 2 layers' weights, 1 layer's grads; + runtime;")
    print("   FSDP x TP 8: tensor parallelism inside each node of 8, each device's 1/8 fully sharded across nodes)")
    return 0


def _print_memory_verdict(f: dict[str, Any], gpus: int) -> None:
    """The verdict for the named device, and what would make the run fit, with the memory of each."""
    cap = f"{f['device']} ({f['capacity_bytes'] / 2**30:.0f} GiB = {_gb(f['capacity_bytes'])})"
    if f["fits"]:
        print(f"  FITS on one {cap}: {_gb(f['needed_bytes'])} per device, {_gb(f['headroom_bytes'])} to spare")
        return
    print(
        f"  DOES NOT FIT on one {cap}: needs {_gb(f['needed_bytes'])} per device, "
        f"{_gb(-f['headroom_bytes'])} too much. What makes it fit:"
    )
    for x in f["suggestions"]:
        flags = f"  [{x['flags']}]" if x["flags"] else ""
        print(
            f"    {x['change']:<44} {_gb(x['bytes']):>10} per device  {'fits' if x['fits'] else 'does not fit'}"
            f"{flags}\n      ({x['note']})"
        )
    fit = f["fitting"]
    if fit is None:
        print("    none of these, nor them combined, fits: a larger device, or fewer parameters or a shorter context")
    elif fit["note"] == "combined":
        print(
            f"    no single change is enough; combined: {fit['change']}: {_gb(fit['bytes'])} per device"
            + (f"  [{fit['flags']}]" if fit["flags"] else "")
        )
