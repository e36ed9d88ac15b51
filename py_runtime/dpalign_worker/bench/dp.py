"""Benchmark: dpalign's DP step beside a non-private step and beside Opacus, side by side in one
process on the same model and batch.

    python -m dpalign_worker.bench.dp                      # tiny GPT-2 on CPU
    python -m dpalign_worker.bench.dp --preset anchor --threads 2 --reps 3   # issue 10's anchor
    python -m dpalign_worker.bench.dp --device cuda --preset gpt2-small --json gpt2-small.json   # ~5 min, H100
    python -m dpalign_worker.bench.dp --device cpu --preset gpt2-small --n-layer 1 --n-embd 96 --vocab 2000 \
        --batch 2 --seq-len 16 --reps 1 --warmup 1 --no-mem --no-noise        # smoke run of that preset

For each of LoRA (rank 4 on c_attn) and full fine-tuning, and each precision of --precisions (fp32;
bf16 = torch.autocast bfloat16 with float32 weights, gradient sums and noise: ModelSpec dtype
"autocast_bfloat16" for dpalign, autocast around the forward for Opacus) it times, on the same
causal-LM batch and the same initial weights:
  nonprivate     dpalign's non-private step (mini-batch gradient, AdamW): the baseline of every ratio
  dpalign        dpalign's DP step (its default: per-example norms by ghost norms / book-keeping,
                 engine/ghost_norms.py, the clipped sum from the same backward; secure noise, DP-AdamW)
  dpalign-vmap   the same with torch.func per-example gradients (the fallback and reference path)
  dpalign+opacus dpalign's DP step with backend "opacus" (Opacus's GradSampleModule hooks for the
                 per-example gradients; dpalign's clip, noise and optimizer)
  opacus-hooks   Opacus as a user runs it: GradSampleModule + DPOptimizer(AdamW); LoRA through peft
                 (so Opacus's own Linear hooks), full fine-tuning on the HF model (its torch.func
                 fallback for transformers' Conv1D)
  opacus-functorch  the same with force_functorch=True
  opacus-ghost   GradSampleModuleFastGradientClipping + DPOptimizerFastGradientClipping, ghost
                 clipping (two backward passes); where Opacus supports the model's layers
  peft-nonprivate   a plain AdamW step on the peft model (LoRA only): Opacus's own baseline
A variant that fails is reported with its error, not dropped. Steps are interleaved (one of each
variant per round, so all see the same machine load); the table gives the median over --reps.

Peak memory: CUDA: the step's peak allocation above what was resident before it. CPU: each variant
in a fresh process (--mem-probe): one warm-up step, malloc_trim, then the peak resident set
(VmHWM, reset through /proc/self/clear_refs) of one step above the resident set before it. Python's
tracemalloc is not used: it does not see torch's allocations.

Noise: dpalign draws its noise from the secure source (AES-256-CTR), Opacus from torch's generator
(its default, secure_mode=False); the noise stage alone is timed at the end, secure and seeded.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from ..engine import ghost_norms
from ..engine.dp_step import DpConfig, train_step
from ..engine.lora import LoraConfig
from ..engine.models import EngineModel, ModelConfig, build_model
from ..engine.noise import SecureGaussian, SeededGaussian
from ..engine.objectives import get_objective
from ..engine.optim import OptimizerConfig
from ..engine.tokenizer import train_tokenizer

PRESETS = {
    # name: (n_layer, n_head, n_embd, n_positions, vocab, batch, seq_len)
    "tiny": (2, 2, 64, 128, 400, 32, 64),
    # issue 10's anchor: HF GPT-2 architecture 4 x 256, vocab 8192, batch 64 x 64 (run with --threads 2)
    "anchor": (4, 4, 256, 128, 8192, 64, 64),
    # 124M parameters, random init; batch 32 x 256 keeps Opacus's and torch.func's per-example
    # gradients of full fine-tuning (32 x 124M floats each) inside an H100's 80 GB
    "gpt2-small": (12, 12, 768, 1024, 50257, 32, 256),
}
# what a preset runs when --variants is not given (the GPU preset: ~5 min on one H100)
DEFAULT_VARIANTS = {"gpt2-small": ("nonprivate", "dpalign", "dpalign-vmap", "opacus-hooks", "opacus-ghost",
                                   "peft-nonprivate")}
PRECISIONS = {"fp32": "", "bf16": "autocast_bfloat16"}
VARIANTS = ("nonprivate", "dpalign", "dpalign-vmap", "dpalign+opacus", "opacus-hooks", "opacus-functorch", "opacus-ghost",
            "peft-nonprivate")
OPACUS_VARIANTS = {"dpalign+opacus", "opacus-hooks", "opacus-functorch", "opacus-ghost", "peft-nonprivate"}
LR, SIGMA, C = 1e-4, 1.0, 1.0
_CURRENT: dict = {}
_BASE: dict = {}


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, n_head, n_embd, n_pos, vocab, _, _ = _CURRENT["preset"]
    n_head = n_head if n_embd % n_head == 0 else 1
    cfg = GPT2Config(vocab_size=vocab, n_positions=n_pos, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_pytorch_tanh",
                     bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    key = (n_layer, n_head, n_embd, n_pos, vocab)
    if _BASE.get("key") != key:  # built once per size, copied per variant (same weights, less time)
        torch.manual_seed(0)
        _BASE.update(key=key, model=GPT2LMHeadModel._from_config(cfg, attn_implementation="eager"))
    return copy.deepcopy(_BASE["model"])


def _factory():
    """Entry point used by the bench: a GPT-2 of the preset's size (random init, eager attention)."""
    return _gpt2(), _CURRENT["tokenizer"]


def _batch(n: int, length: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    ids = torch.randint(2, vocab, (n, length), generator=g)
    mask = torch.zeros(n, length)
    for i in range(n):
        ids[i, lengths[i]:] = 1
        mask[i, length // 4: lengths[i]] = 1
    return {"input_ids": ids, "lengths": lengths, "loss_mask": mask}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, reps: int, device: str) -> float:
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def _setup(args):
    preset = list(PRESETS[args.preset])
    for i, over in ((0, args.n_layer), (2, args.n_embd), (4, args.vocab)):
        preset[i] = over or preset[i]
    preset = tuple(preset)
    tok_dir = tempfile.mkdtemp(prefix="dpalign-bench-tok-")
    texts = [f"sample text number {i} about movies, acting and plots" for i in range(200)]
    train_tokenizer(texts, 300, tok_dir)
    from ..engine.tokenizer import load_tokenizer

    # the entry point imports this module by name (not as __main__): configure that copy
    importlib.import_module("dpalign_worker.bench.dp")._CURRENT.update(preset=preset, tokenizer=load_tokenizer(tok_dir))
    _CURRENT.update(preset=preset)
    n, length = args.batch or preset[5], args.seq_len or preset[6]
    return n, length, _batch(n, length, preset[4])


def _spec(mode: str, device: str, precision: str = "fp32") -> ModelConfig:
    return ModelConfig(entry_point="dpalign_worker.bench.dp:_factory", device=device, dtype=PRECISIONS[precision],
                       lora=LoraConfig(rank=4, alpha=8, target_modules=("c_attn",)) if mode == "lora" else LoraConfig(),
                       train_base=mode == "full")


def _dpalign_step(mode: str, kind: str, args, batch, n: int, precision: str):
    backend = "opacus" if kind == "dpalign+opacus" else "builtin"
    m = build_model("bench", _spec(mode, args.device, precision), args.device, OptimizerConfig("adamw", lr=LR), backend)
    if kind == "dpalign-vmap":
        m.per_example = "vmap"
    secure = args.noise == "secure"
    cfg = DpConfig(False) if kind == "nonprivate" else DpConfig(True, SIGMA, C, float(n), secure)
    return lambda: train_step(m, "causal_lm", batch, cfg, args.micro_batch, LR), m.model


def _opacus_step(mode: str, kind: str, args, batch, n: int, precision: str):
    """Opacus as its documentation runs it, on the same GPT-2 weights (peft LoRA for LoRA); bf16:
    torch.autocast around the forward, as for dpalign."""
    amp = (lambda: torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)) if precision == "bf16" \
        else contextlib.nullcontext
    lm = _gpt2()
    if mode == "lora":
        from peft import LoraConfig as PeftLora, get_peft_model

        lm = get_peft_model(lm, PeftLora(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"],
                                         fan_in_fan_out=True))
    else:
        for p in lm.parameters():
            p.requires_grad_(True)
    model = EngineModel(lm, 0, False, False).to(args.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    objective = get_objective("causal_lm")
    pb = objective.prepare(batch, 1)
    pb = {k: v.to(args.device) for k, v in pb.items()}
    ids = pb["input_ids"]
    # HF's default position ids are [1, L]; Opacus needs the batch as first dimension of every input
    pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand_as(ids).contiguous()
    base = torch.optim.AdamW(params, lr=LR)
    if kind == "peft-nonprivate":
        def plain():
            base.zero_grad(set_to_none=True)
            with amp():
                losses, _ = objective.compute(lambda x, want="logits": model(x, want=want), pb, None)
            losses.mean().backward()
            base.step()
            base.zero_grad(set_to_none=True)
        return plain, model
    if kind == "opacus-ghost":
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
        from opacus.optimizers import DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

        gsm = GradSampleModuleFastGradientClipping(model, batch_first=True, loss_reduction="mean",
                                                   max_grad_norm=C, use_ghost_clipping=True)
        opt = DPOptimizerFastGradientClipping(base, noise_multiplier=SIGMA, max_grad_norm=C,
                                              expected_batch_size=n, loss_reduction="mean")

        def ghost():
            opt.zero_grad(set_to_none=True)
            with amp():
                losses, _ = objective.compute(lambda x, want="logits": gsm(x, want=want, position_ids=pos), pb, None)
            DPTensorFastGradientClipping(gsm, opt, losses, "mean").backward()
            opt.step()
            opt.zero_grad(set_to_none=True)  # release per-sample state: nothing is held between steps
        return ghost, model
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", force_functorch=kind == "opacus-functorch")
    opt = DPOptimizer(base, noise_multiplier=SIGMA, max_grad_norm=C, expected_batch_size=n, loss_reduction="mean")

    def hooks():
        opt.zero_grad(set_to_none=True)
        with amp():
            losses, _ = objective.compute(lambda x, want="logits": gsm(x, want=want, position_ids=pos), pb, None)
        losses.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)  # releases grad_sample and summed_grad, as dpalign's step does
    return hooks, model


def _make(mode: str, kind: str, args, batch, n: int, precision: str = "fp32"):
    if kind in ("nonprivate", "dpalign", "dpalign-vmap", "dpalign+opacus"):
        return _dpalign_step(mode, kind, args, batch, n, precision)
    return _opacus_step(mode, kind, args, batch, n, precision)


def _variants(args, mode: str) -> list[str]:
    from ..engine.opacus_backend import available

    chosen = args.variants or DEFAULT_VARIANTS.get(args.preset, ["all"])
    want = [v for v in VARIANTS if (v in chosen or "all" in chosen or v == "nonprivate")]
    if mode == "full":
        want = [v for v in want if v != "peft-nonprivate"]
    if not available():
        want = [v for v in want if v not in OPACUS_VARIANTS]
    return want


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _cpu_step_peak_mb(fn) -> float:
    """Peak resident set of one step above the resident set before it (after one warm-up step)."""
    fn()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident set
        f.write("5")
    fn()
    return (_rss_kb("VmHWM") - before) / 1024


def _mem_probe(args) -> None:
    mode, kind, precision = args.mem_probe.split(":")
    n, _, batch = _setup(args)
    fn, _ = _make(mode, kind, args, batch, n, precision)
    print(round(_cpu_step_peak_mb(fn), 1))


def _cpu_peak_in_child(args, mode: str, kind: str, precision: str) -> float | str:
    cmd = [sys.executable, "-m", "dpalign_worker.bench.dp", "--preset", args.preset, "--device", args.device,
           "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--micro-batch", str(args.micro_batch),
           "--threads", str(args.threads), "--noise", args.noise, "--n-layer", str(args.n_layer), "--n-embd", str(args.n_embd),
           "--vocab", str(args.vocab), "--mem-probe", f"{mode}:{kind}:{precision}"]
    # the child runs this very package (not whatever an editable install points at)
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(f"bench:dp: memory probe {mode}:{kind}:{precision} failed: {r.stderr.strip()[-400:]}", file=sys.stderr)
        return "failed"
    return float(r.stdout.strip().splitlines()[-1])


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:160]


def run(args) -> list[dict]:
    n, length, batch = _setup(args)
    rows = []
    for mode in args.modes:
        for precision in args.precisions:
            rows += _run_group(args, mode, precision, n, length, batch)
    return rows


def _run_group(args, mode: str, precision: str, n: int, length: int, batch) -> list[dict]:
    """Every variant of one (mode, precision), interleaved; ratios to that group's non-private step."""
    cuda = args.device.startswith("cuda")
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    steps, errors, models = {}, {}, {}
    for kind in _variants(args, mode):
        try:
            fn, model = _make(mode, kind, args, batch, n, precision)
            for _ in range(max(1, args.warmup)):  # the first step shows whether it runs at all
                fn()
            steps[kind], models[kind] = fn, model
        except Exception as exc:  # reported, not dropped
            errors[kind] = _short(exc)
            if cuda:
                torch.cuda.empty_cache()
    times = {k: [] for k in steps}
    for _ in range(args.reps):  # interleaved, so every variant sees the same machine load
        for kind, fn in steps.items():
            times[kind].append(_time(fn, 1, args.device))
    base = statistics.median(times["nonprivate"]) if "nonprivate" in times else float("nan")
    rows = []
    for kind in _variants(args, mode):
        trainable = (sum(p.numel() for p in models[kind].parameters() if p.requires_grad)
                     if kind in models else 0)
        r = {"preset": args.preset, "device": args.device, "mode": mode, "precision": precision, "variant": kind,
             "batch": n, "seq_len": length, "threads": torch.get_num_threads(), "reps": args.reps,
             "trainable": trainable}
        if kind in errors:
            r["error"] = errors[kind]
        else:
            if kind == "dpalign":  # which per-example path the default took (and why, if torch.func)
                tr = {k: p for k, p in models[kind].named_parameters() if p.requires_grad}
                r["fallback"] = ghost_norms.fallback_reason(models[kind], tr, "causal_lm")
            med = statistics.median(times[kind])
            r.update(median_s=med, min_s=min(times[kind]), ratio=med / base)
            if args.no_mem:
                pass
            elif cuda:
                _sync(args.device)
                resident = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                steps[kind]()
                _sync(args.device)
                r["peak_mb"] = round((torch.cuda.max_memory_allocated() - resident) / 2**20, 1)
            else:
                r["peak_mb"] = _cpu_peak_in_child(args, mode, kind, precision)
        rows.append(r)
    base_mem = next((r.get("peak_mb") for r in rows if r["variant"] == "nonprivate"), None)
    for r in rows:
        if isinstance(r.get("peak_mb"), float) and isinstance(base_mem, float) and base_mem > 0:
            r["mem_ratio"] = r["peak_mb"] / base_mem
    del steps, models
    return rows


def print_rows(rows: list[dict], args) -> None:
    """A markdown table; every ratio is to the non-private step of the same mode and precision."""
    cuda = args.device.startswith("cuda")
    mem = "peak MB above resident (CUDA allocator)" if cuda else "peak RSS MB above resident (fresh process)"
    r0 = rows[0]
    dev = torch.cuda.get_device_name(0) if cuda and torch.cuda.is_available() else "cpu"
    print(f"dpalign bench:dp  preset={args.preset} device={args.device} ({dev}) noise={args.noise} batch={r0['batch']} "
          f"seq_len={r0['seq_len']} micro_batch={args.micro_batch or 'all'} threads={r0['threads']} "
          f"reps={args.reps} (median) torch={torch.__version__} opacus={_opacus_version()}")
    print()
    print(f"| mode | precision | variant | trainable | median s | min s | x non-private | {mem} | x non-private mem |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        head = f"| {r['mode']} | {r['precision']} | {r['variant']} |"
        if "error" in r:
            print(f"{head} | does not run: {r['error'].replace('|', '/')} | | | | |")
            continue
        peak = r.get("peak_mb", "-")
        peak = f"{peak:.0f}" if isinstance(peak, float) else str(peak)
        mr = f"{r['mem_ratio']:.2f}x" if "mem_ratio" in r else "-"
        if r.get("fallback"):
            head = head[:-1] + f"(torch.func: {r['fallback']}) |"
        print(f"{head} {r['trainable']:,} | {r['median_s']:.4f} | {r['min_s']:.4f} | {r['ratio']:.2f}x | {peak} | {mr} |")


def _opacus_version() -> str:
    try:
        import opacus

        return opacus.__version__
    except ImportError:
        return "not installed"


GPT2_SMALL_PARAMS = 124_439_808  # GPT-2 small (124M), tied embeddings counted once


def _draw_all(source, shapes: list[torch.Size], device: str) -> None:
    for shape in shapes:  # what add_noise does: one draw per trainable tensor, float32 on the device
        source.gaussian(shape, 1.0, torch.float32, device)


def noise_rows(args) -> list[dict]:
    """Cost of the add-noise stage alone, secure versus seeded, per step (source creation included:
    a secure step draws a fresh key)."""
    targets: list[tuple[str, list[torch.Size]]] = []
    _setup(args)
    for mode in ("lora", "full"):
        m = build_model("bench", _spec(mode, args.device), args.device, OptimizerConfig("adamw", lr=1e-4))
        targets.append((f"{args.preset} {mode}", [p.shape for p in m.trainable.values()]))
        del m
    targets.append(("124M vector", [torch.Size([GPT2_SMALL_PARAMS])]))
    cuda = args.device.startswith("cuda")
    rows = []
    for name, shapes in targets:
        sources = {"secure": lambda: SecureGaussian(), "seeded": lambda: SeededGaussian(0, 1, args.device)}
        big = sum(s.numel() for s in shapes) > 10_000_000
        reps = max(3, args.noise_reps // 3) if big and not cuda else args.noise_reps
        for fn in sources.values():  # warm-up (allocator, first CUDA kernels)
            _draw_all(fn(), shapes, args.device)
        times: dict[str, list[float]] = {k: [] for k in sources}
        for _ in range(reps):
            for kind, fn in sources.items():
                times[kind].append(_time(lambda fn=fn: _draw_all(fn(), shapes, args.device), 1, args.device))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"target": name, "floats": sum(s.numel() for s in shapes), "tensors": len(shapes),
                     "device": args.device, "reps": reps, "secure_s": med["secure"], "seeded_s": med["seeded"],
                     "ratio": med["secure"] / med["seeded"]})
        gc.collect()
    return rows


def print_noise(rows: list[dict]) -> None:
    print(f"add-noise stage alone (per step, median): secure = AES-256-CTR + Box-Muller float64, seeded = torch generator")
    print(f"{'target':<14}{'floats':>14}{'tensors':>9}{'secure s':>12}{'seeded s':>12}{'secure/seeded':>15}{'secure Mfloat/s':>17}")
    for r in rows:
        print(f"{r['target']:<14}{r['floats']:>14,}{r['tensors']:>9}{r['secure_s']:>12.5f}{r['seeded_s']:>12.5f}"
              f"{r['ratio']:>14.2f}x{r['floats'] / r['secure_s'] / 1e6:>17.1f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=0, help="examples in the logical batch (default: preset's)")
    ap.add_argument("--seq-len", type=int, default=0)
    ap.add_argument("--micro-batch", type=int, default=0, help="physical micro-batch size, dpalign's variants (0: whole batch)")
    ap.add_argument("--reps", type=int, default=5, help="timed steps of each variant (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    ap.add_argument("--variants", nargs="+", default=None, choices=["all", *VARIANTS],
                    help="which variants (nonprivate, the baseline of the ratios, always runs; default: all, "
                         "for gpt2-small " + " ".join(DEFAULT_VARIANTS["gpt2-small"]) + ")")
    ap.add_argument("--precisions", nargs="+", default=None, choices=sorted(PRECISIONS),
                    help="fp32 and/or bf16 (autocast, float32 weights); default fp32, for gpt2-small both")
    ap.add_argument("--n-layer", type=int, default=0, help="override the preset's layers (smoke runs)")
    ap.add_argument("--n-embd", type=int, default=0, help="override the preset's width")
    ap.add_argument("--vocab", type=int, default=0, help="override the preset's vocabulary")
    ap.add_argument("--no-mem", action="store_true", help="skip the peak-memory probes (one fresh process per variant)")
    ap.add_argument("--json", nargs="?", const="-", default="",
                    help="--json: JSON lines on stdout instead of the table; --json PATH: the table, and all rows "
                         "as a JSON list in PATH")
    ap.add_argument("--noise-reps", type=int, default=9, help="repetitions of the noise timings (median; a third for 124M on CPU)")
    ap.add_argument("--noise", choices=["secure", "seeded"], default="secure",
                    help="noise source of dpalign's DP step: secure (AES-256-CTR, needs `cryptography`) or "
                         "seeded (torch's generator, as Opacus by default; for images without `cryptography`)")
    ap.add_argument("--noise-only", action="store_true", help="time only the add-noise stage (secure vs seeded)")
    ap.add_argument("--no-noise", action="store_true", help="skip the add-noise stage timings")
    ap.add_argument("--mem-probe", default="", help=argparse.SUPPRESS)  # internal: MODE:KIND in a fresh process
    args = ap.parse_args(argv)
    if args.precisions is None:
        args.precisions = ["fp32", "bf16"] if args.preset == "gpt2-small" else ["fp32"]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Opacus's hooks see token ids that need no gradient, and its ghost mode asks CPU autocast for
    # float32: both warn on every step.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", message="CPU Autocast only supports")
    warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mem_probe:
        _mem_probe(args)
        return
    if args.noise_only:
        rows = noise_rows(args)
        if args.json == "-":
            for r in rows:
                print(json.dumps(r))
        else:
            print_noise(rows)
        return
    rows = run(args)
    noise = []
    if not args.no_noise:
        try:  # the step table stands without them (a GPU image without `cryptography`, say)
            noise = noise_rows(args)
        except Exception as exc:
            print(f"bench:dp: noise-stage timings skipped: {_short(exc)}", file=sys.stderr)
    if args.json == "-":
        for r in rows + noise:
            print(json.dumps(r))
        return
    print_rows(rows, args)
    if noise:
        print()
        print_noise(noise)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "mem_probe"}, "steps": rows,
                       "noise": noise, "torch": torch.__version__, "opacus": _opacus_version(),
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""}, f, indent=1)
        print(f"\nrows written to {args.json}")


if __name__ == "__main__":
    main()
