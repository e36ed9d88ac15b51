"""Shared fixtures: one tiny tokenizer per session and builders of tiny GPT-2 models."""
from __future__ import annotations

import pytest
import torch

from dpalign_worker.engine.lora import LoraConfig
from dpalign_worker.engine.models import ModelConfig, TinyConfig, build_model
from dpalign_worker.engine.objectives import PpoParams
from dpalign_worker.engine.optim import OptimizerConfig
from dpalign_worker.protocol import worker_pb2 as pb
from dpalign_worker.registry import WorkerContext

# Tiny models gain nothing from intra-op threads, and on shared CPUs OpenMP threads that wait on
# each other make the suite many times slower under load.
torch.set_num_threads(1)

# PPO's parameters for tests (the worker has no defaults; the control plane's are the same values).
PPO = PpoParams(clip_range=0.2, clip_range_value=0.2, vf_coef=0.1)

CORPUS = [
    "the movie was great and the acting was wonderful",
    "a terrible film with a boring plot and bad acting",
    "i loved every minute of this beautiful story",
    "the worst movie i have seen this year, truly awful",
    "an average film, some good scenes and some dull ones",
] * 4


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    from dpalign_worker.engine.tokenizer import train_tokenizer

    out = str(tmp_path_factory.mktemp("tok"))
    train_tokenizer(CORPUS, 300, out)
    return out


def tiny_spec(tok_dir: str, lora_rank: int = 4, value_head=False, reward_head=False, train_base=False,
              init_checkpoint: str = "", seed: int = 1, targets=("c_attn",)) -> pb.ModelSpec:
    return pb.ModelSpec(
        tiny=pb.TinyModelSpec(n_layer=2, n_head=2, n_embd=32, n_positions=64, tokenizer_dir=tok_dir),
        lora=pb.LoraSpec(rank=lora_rank, alpha=8, dropout=0.0, target_modules=list(targets) if lora_rank else []),
        value_head=value_head, reward_head=reward_head, train_base=train_base,
        init_checkpoint=init_checkpoint, init_seed=seed,
    )


def tiny_config(tok_dir: str, lora_rank: int = 4, value_head=False, reward_head=False, train_base=False,
                init_checkpoint: str = "", seed: int = 1, targets=("c_attn",), lora_dropout=0.0) -> ModelConfig:
    """tiny_spec's model as the engine takes it."""
    return ModelConfig(
        tiny=TinyConfig(n_layer=2, n_head=2, n_embd=32, n_positions=64, tokenizer_dir=tok_dir),
        lora=LoraConfig(lora_rank, 8.0, lora_dropout, tuple(targets) if lora_rank else ()),
        value_head=value_head, reward_head=reward_head, train_base=train_base,
        init_checkpoint=init_checkpoint, init_seed=seed,
    )


def make_model(tok_dir, optimizer="adamw", **kw):
    spec = tiny_config(tok_dir, **kw)
    opt = OptimizerConfig(optimizer, lr=1e-2) if optimizer else None
    return build_model("m", spec, "cpu", opt)


def perturb_lora(m, seed: int = 0) -> None:
    """Fresh LoRA B is zero (adapter = identity); give it values so gradients of A are non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.trainable.items():
            if n.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.fixture
def ctx():
    return WorkerContext(device="cpu")


def lm_batch(n: int, seed: int = 0, vocab: int = 290, width: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, width + 1, (n,), generator=g)
    ids = torch.randint(2, vocab, (n, width), generator=g)
    mask = torch.zeros(n, width)
    for i in range(n):
        ids[i, lengths[i]:] = 1
        mask[i, 2: lengths[i]] = 1
    return {"input_ids": ids, "lengths": lengths, "loss_mask": mask}


def cls_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    b = lm_batch(n, seed)
    return {"input_ids": b["input_ids"], "lengths": b["lengths"], "labels": torch.arange(n) % 2}


def pair_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    a, b = lm_batch(n, seed), lm_batch(n, seed + 100, width=9)
    return {"chosen_ids": a["input_ids"], "chosen_lengths": a["lengths"],
            "rejected_ids": b["input_ids"], "rejected_lengths": b["lengths"]}


def ppo_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    q, r = lm_batch(n, seed, width=6), lm_batch(n, seed + 7, width=5)
    g = torch.Generator().manual_seed(seed)
    lr = r["lengths"].clamp(max=5)
    lr[0] = 0 if n > 2 else lr[0]  # an empty response is allowed
    shape = r["input_ids"].shape
    return {"query_ids": q["input_ids"], "query_lengths": q["lengths"], "response_ids": r["input_ids"],
            "response_lengths": lr, "old_logprobs": -torch.rand(shape, generator=g) * 5,
            "old_values": torch.randn(shape, generator=g), "advantages": torch.randn(shape, generator=g),
            "returns": torch.randn(shape, generator=g)}
