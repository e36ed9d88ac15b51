"""Benchmark: the data-parallel DP step (issue 9): samples per second of one worker with T threads
against W workers (gloo process group, engine/distributed.py) with T/W threads each, on the same
tiny model and the same logical batch.

    npm run bench:dp-parallel                                   # 1 x 2 threads vs 2 x 1 thread, CPU
    python -m dpalign_worker.bench.dp_parallel --layouts 1x2,2x1 --batch 64 --seq-len 32 --rounds 3
    python -m dpalign_worker.bench.dp_parallel --device cuda --layouts 1x1,2x1,4x1,8x1   # one GPU per worker

Each layout runs in fresh processes (torch.multiprocessing spawn), as workers do: rank r builds the
same model, takes its share of the batch (rows split round-robin; the control plane balances by
tokens) and runs the full DP step: per-example gradients, clipping, one all-reduce, noise on rank 0
(secure, AES-CTR), DP-AdamW. A step's time is rank 0's wall time between barriers; samples per
second = logical batch / median step time. Layouts alternate over --rounds so that all see the same
machine load; the table gives the best round of each (the least disturbed by other processes).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

from .dp import _batch  # the same causal-LM batch as bench:dp

SIGMA, C, LR = 1.0, 1.0, 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, threads: int, port: int, args: argparse.Namespace, tok_dir: str, out: str) -> None:
    torch.set_num_threads(threads)
    from ..engine import distributed
    from ..engine.dp_step import DpConfig, train_step
    from ..engine.lora import LoraConfig
    from ..engine.models import ModelConfig, TinyConfig, build_model
    from ..engine.optim import OptimizerConfig

    device = args.device if args.device == "cpu" else f"cuda:{rank}"
    if world > 1:
        distributed.init_group(rank, world, "127.0.0.1", port, "nccl" if device.startswith("cuda") else "gloo", 120.0,
                               device)
    spec = ModelConfig(tiny=TinyConfig(args.n_layer, 2, args.n_embd, 64, tok_dir),
                       lora=LoraConfig(4, 16.0, 0.0, ("c_attn",)), init_seed=1, device=device)
    m = build_model("bench", spec, device, OptimizerConfig("adamw", lr=LR))
    full = _batch(args.batch, args.seq_len, len(m.tokenizer))
    share = {k: v[rank::world] for k, v in full.items()}
    dp = DpConfig(True, SIGMA, C, float(args.batch), True)

    def barrier() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()

    times = []
    for i in range(args.warmup + args.steps):
        barrier()
        t = time.perf_counter()
        train_step(m, "causal_lm", share, dp, 0, LR)
        barrier()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"step_s": statistics.median(times)}, f)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def run_layout(world: int, threads: int, args: argparse.Namespace, tok_dir: str) -> float:
    out = tempfile.mktemp(prefix="dpalign-bench-par-", suffix=".json")
    mp.spawn(_rank, args=(world, threads, _free_port(), args, tok_dir, out), nprocs=world, join=True)
    with open(out) as f:
        step_s = json.load(f)["step_s"]
    os.remove(out)
    return step_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layouts", default="1x2,2x1", help="workers x threads, comma-separated (default 1x2,2x1)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (worker r on cuda:r)")
    p.add_argument("--batch", type=int, default=64, help="logical batch (examples per step)")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    layouts = [tuple(int(x) for x in s.split("x")) for s in args.layouts.split(",")]
    from ..engine.tokenizer import train_tokenizer

    tok_dir = tempfile.mkdtemp(prefix="dpalign-bench-tok-")
    train_tokenizer([f"sample text number {i} about movies, acting and plots" for i in range(200)], 300, tok_dir)
    best: dict[tuple[int, int], float] = {}
    for _ in range(args.rounds):
        for w, t in layouts:
            s = run_layout(w, t, args, tok_dir)
            best[(w, t)] = min(best.get((w, t), float("inf")), s)
    base = best[layouts[0]]
    print(f"DP step, tiny GPT-2 ({args.n_layer} layers, {args.n_embd} wide, LoRA rank 4), logical batch {args.batch} x "
          f"{args.seq_len} tokens, {args.device}; best of {args.rounds} rounds, median of {args.steps} steps each")
    print(f"{'workers x threads':>18} {'step s':>8} {'samples/s':>10} {'vs ' + 'x'.join(map(str, layouts[0])):>9}")
    rows = []
    for w, t in layouts:
        s = best[(w, t)]
        rows.append({"workers": w, "threads": t, "step_s": s, "samples_per_s": args.batch / s, "speedup": base / s})
        print(f"{f'{w} x {t}':>18} {s:8.3f} {args.batch / s:10.1f} {base / s:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
