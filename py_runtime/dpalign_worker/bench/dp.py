"""Benchmark: one DP step versus one non-private step on the same logical batch.

    python -m dpalign_worker.bench.dp                      # tiny GPT-2 on CPU
    python -m dpalign_worker.bench.dp --device cuda --preset gpt2-small

For each of LoRA (rank 4 on c_attn) and full fine-tuning it times the DP step (per-example
gradients, clipping, noise, DP-AdamW) and the non-private step (ordinary mini-batch gradient,
AdamW) on the same causal-LM batch, interleaved so both see the same machine load (best of
--reps), reports the ratio, and the peak memory (CUDA: the step's peak allocation above what was
resident before it; CPU: the peak resident set of a fresh process that builds the model and runs
two steps of that kind, import overhead included).

It then times the add-noise stage alone: drawing N(0, sigma C) for every trainable tensor with the
secure source (fresh AES-256-CTR key, Box-Muller in float64) and the seeded one (torch's
generator), for the preset's LoRA and full parameter sets and for one 124M-float vector
(GPT-2 small's size); median of --noise-reps, interleaved. --noise-only skips the step timings.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from ..engine.dp_step import DpConfig, train_step
from ..engine.lora import LoraConfig
from ..engine.models import ModelConfig, build_model
from ..engine.optim import OptimizerConfig
from ..engine.noise import SecureGaussian, SeededGaussian
from ..engine.tokenizer import train_tokenizer

PRESETS = {
    # name: (n_layer, n_head, n_embd, n_positions, vocab, batch, seq_len)
    "tiny": (2, 2, 64, 128, 400, 32, 64),
    "gpt2-small": (12, 12, 768, 1024, 50257, 16, 128),  # 124M parameters, random init
}
_CURRENT: dict = {}


def _factory():
    """Entry point used by the bench: a GPT-2 of the preset's size (random init, eager attention)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, n_head, n_embd, n_pos, vocab, _, _ = _CURRENT["preset"]
    cfg = GPT2Config(vocab_size=vocab, n_positions=n_pos, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_pytorch_tanh",
                     bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    torch.manual_seed(0)
    return GPT2LMHeadModel._from_config(cfg, attn_implementation="eager"), _CURRENT["tokenizer"]


def _batch(n: int, length: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    ids = torch.randint(2, vocab, (n, length), generator=g)
    mask = torch.zeros(n, length)
    for i in range(n):
        ids[i, lengths[i]:] = 1
        mask[i, length // 4: lengths[i]] = 1
    return {"input_ids": ids, "lengths": lengths, "loss_mask": mask}


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def _time(fn, reps: int, device: str) -> float:
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def _setup(args):
    preset = PRESETS[args.preset]
    tok_dir = tempfile.mkdtemp(prefix="dpalign-bench-tok-")
    texts = [f"sample text number {i} about movies, acting and plots" for i in range(200)]
    train_tokenizer(texts, 300, tok_dir)
    from ..engine.tokenizer import load_tokenizer

    # the entry point imports this module by name (not as __main__): configure that copy
    importlib.import_module("dpalign_worker.bench.dp")._CURRENT.update(preset=preset, tokenizer=load_tokenizer(tok_dir))
    n, length = args.batch or preset[5], args.seq_len or preset[6]
    return n, length, _batch(n, length, preset[4])


def _spec(mode: str, device: str) -> ModelConfig:
    return ModelConfig(entry_point="dpalign_worker.bench.dp:_factory", device=device,
                       lora=LoraConfig(rank=4, alpha=8, target_modules=("c_attn",)) if mode == "lora" else LoraConfig(),
                       train_base=mode == "full")


def _configs(n: int) -> dict[str, DpConfig]:
    return {"nonprivate": DpConfig(False, 0.0, 0.0, 0.0), "dp": DpConfig(True, 1.0, 1.0, float(n), True)}


def _cpu_peak_in_child(args, mode: str, kind: str) -> float:
    """Peak RSS of a fresh process that builds one model and runs two steps of one kind."""
    cmd = [sys.executable, "-m", "dpalign_worker.bench.dp", "--preset", args.preset, "--device", args.device,
           "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--micro-batch", str(args.micro_batch),
           "--threads", str(args.threads), "--mem-probe", f"{mode}:{kind}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _mem_probe(args) -> None:
    mode, kind = args.mem_probe.split(":")
    n, _, batch = _setup(args)
    m = build_model("bench", _spec(mode, args.device), args.device, OptimizerConfig("adamw", lr=1e-4))
    for _ in range(2):
        train_step(m, "causal_lm", batch, _configs(n)[kind], args.micro_batch, 1e-4)
    print(round(_peak_mb(args.device), 1))


def run(args) -> list[dict]:
    n, length, batch = _setup(args)
    configs = _configs(n)
    rows = []
    cuda = args.device.startswith("cuda")
    for mode in ("lora", "full"):
        spec = _spec(mode, args.device)
        res = {"preset": args.preset, "device": args.device, "mode": mode, "batch": n, "seq_len": length,
               "micro_batch": args.micro_batch}
        gc.collect()
        models = {name: build_model("bench", spec, args.device, OptimizerConfig("adamw", lr=1e-4))
                  for name in ("nonprivate", "dp")}
        res["trainable_parameters"] = sum(p.numel() for p in models["dp"].trainable.values())
        res["total_parameters"] = sum(p.numel() for p in models["dp"].model.parameters())
        steps = {name: (lambda m=models[name], cfg=cfg: train_step(m, "causal_lm", batch, cfg, args.micro_batch, 1e-4))
                 for name, cfg in configs.items()}
        for _ in range(args.warmup):
            for fn in steps.values():
                fn()
        times = {name: [] for name in steps}
        for _ in range(args.reps):  # interleaved, so both see the same machine load
            for name, fn in steps.items():
                times[name].append(_time(fn, 1, args.device))
        for name in steps:
            res[f"{name}_s"] = min(times[name])  # least disturbed by other processes on shared CPUs
            if cuda:
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                steps[name]()
                torch.cuda.synchronize()
                res[f"{name}_peak_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
            else:
                res[f"{name}_peak_mb"] = _cpu_peak_in_child(args, mode, name)
        del models, steps
        res["ratio"] = res["dp_s"] / res["nonprivate_s"]
        rows.append(res)
    return rows


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=0, help="examples in the logical batch (default: preset's)")
    ap.add_argument("--seq-len", type=int, default=0)
    ap.add_argument("--micro-batch", type=int, default=0, help="physical micro-batch size (0: whole batch)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    ap.add_argument("--noise-reps", type=int, default=9, help="repetitions of the noise timings (median; a third for 124M on CPU)")
    ap.add_argument("--noise-only", action="store_true", help="time only the add-noise stage (secure vs seeded)")
    ap.add_argument("--mem-probe", default="", help=argparse.SUPPRESS)  # internal: MODE:KIND in a fresh process
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mem_probe:
        _mem_probe(args)
        return
    if args.noise_only:
        rows = noise_rows(args)
        if args.json:
            for r in rows:
                print(json.dumps(r))
        else:
            print_noise(rows)
        return
    rows = run(args)
    noise = noise_rows(args)
    if args.json:
        for r in rows + noise:
            print(json.dumps(r))
        return
    mem = "step peak MB above resident weights" if args.device.startswith("cuda") else "peak RSS MB of a fresh process"
    print(f"dpalign bench:dp  preset={args.preset} device={args.device} batch={rows[0]['batch']} "
          f"seq_len={rows[0]['seq_len']} micro_batch={args.micro_batch or 'all'} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")
    print(f"{'mode':<6}{'trainable':>12}{'non-private s':>15}{'DP s':>10}{'DP/non-private':>16}"
          f"{'  ' + mem + ' (non-private / DP)'}")
    for r in rows:
        print(f"{r['mode']:<6}{r['trainable_parameters']:>12,}{r['nonprivate_s']:>15.4f}{r['dp_s']:>10.4f}"
              f"{r['ratio']:>15.2f}x  {r['nonprivate_peak_mb']:.0f} / {r['dp_peak_mb']:.0f}")
    print()
    print_noise(noise)


if __name__ == "__main__":
    main()
