"""Models by request: the built-in tiny GPT-2, a local Hugging Face causal LM, or a user entry point
`package.module:factory`; then LoRA, a value head and a reward head. Only LoRA and heads are
trainable unless train_base is set.

EngineModel.forward(input_ids, want=...) is the single forward used for training (under
torch.func), scoring and the first generation step:
  want="logits"        -> {"logits"}                 [B, L, V]
  want="logits_values" -> {"logits", "values"}       values [B, L] from the value head
  want="rewards"       -> {"rewards"}                [B, L] reward head at every position; with
                                                     reward_pooling "mean", the running mean of the head
                                                     up to each position (so the reward read at the
                                                     last real token is the mean over the sequence)
Entry points return (model, tokenizer): a transformers-style causal LM (forward(input_ids=...,
use_cache=..., output_hidden_states=...) -> .logits, .hidden_states), or any module whose
forward(input_ids) returns logits [B, L, V] (then causal_lm training and log-prob scoring
work; generation and heads need a transformers-style model).
Inputs are right-padded; without an attention mask a causal model's outputs at real positions do
not depend on the padding after them, so training and scoring pass no mask.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import invalid_argument, not_found, unsupported_model
from .heads import ScalarHead
from .lora import LoraConfig, apply_lora, canonical_name
from .optim import OptimizerConfig

DTYPES = {"": torch.float32, "float32": torch.float32, "float64": torch.float64,
          "bfloat16": torch.bfloat16, "float16": torch.float16}
# Mixed precision: float32 weights (the optimizer's master copy), the forward and backward under
# torch.autocast in the given dtype; gradient sums and noise stay float32 (dp_step.py).
AUTOCAST = {"autocast_bfloat16": torch.bfloat16}
REWARD_POOLINGS = ("last", "mean")


def _no_padding_check(*_a: Any, **_k: Any) -> None:
    return None


class EngineModel(nn.Module):
    def __init__(self, lm: nn.Module, hidden_size: int, value_head: bool, reward_head: bool,
                 reward_pooling: str = "last") -> None:
        super().__init__()
        if reward_pooling not in REWARD_POOLINGS:
            raise invalid_argument(f"unknown reward pooling {reward_pooling!r}", supported=",".join(REWARD_POOLINGS))
        self.lm = lm
        self.value_head = ScalarHead(hidden_size) if value_head else None
        self.reward_head = ScalarHead(hidden_size) if reward_head else None
        self.reward_pooling = reward_pooling
        # Hugging Face models check `pad_token_id in input_ids` when no mask is given: a Python
        # branch on tensor data that vmap cannot run. Training inputs are right-padded and causal,
        # so no mask is needed; silence the check on these instances.
        # Models from an entry point need not be transformers models: a plain module whose
        # forward(input_ids) returns logits works for causal_lm (heads need hidden states).
        self._plain = not hasattr(lm, "config")
        for mod in lm.modules():
            if hasattr(mod, "warn_if_padding_and_no_attention_mask"):
                mod.warn_if_padding_and_no_attention_mask = _no_padding_check

    def _body(self) -> nn.Module | None:
        body = getattr(self.lm, "base_model", None)
        return body if isinstance(body, nn.Module) and body is not self.lm else None

    def forward(self, input_ids: torch.Tensor, want: str = "logits", **kw: Any) -> dict[str, torch.Tensor]:
        if want == "rewards":
            if self.reward_head is None:
                raise invalid_argument("this model has no reward head (load it with reward_head=true)")
            body = self._body()
            if body is not None:
                hidden = body(input_ids=input_ids, use_cache=False, **kw).last_hidden_state
            else:
                hidden = self.lm(input_ids=input_ids, use_cache=False, output_hidden_states=True, **kw).hidden_states[-1]
            rewards = self.reward_head(hidden)
            if self.reward_pooling == "mean":
                # A running mean: every reader takes the value at the last real token, and with right
                # padding under a causal model that value never sees the padding after it.
                steps = torch.arange(1, rewards.shape[-1] + 1, device=rewards.device, dtype=rewards.dtype)
                rewards = rewards.cumsum(-1) / steps
            return {"rewards": rewards}
        need_values = want == "logits_values"
        if need_values and self.value_head is None:
            raise invalid_argument("this model has no value head (load it with value_head=true)")
        if self._plain:  # a user module: forward(input_ids) -> logits [B, L, V]
            if need_values:
                raise unsupported_model("a value head needs a model that returns hidden_states (a transformers-style output)")
            out = self.lm(input_ids)
            return {"logits": out if isinstance(out, torch.Tensor) else out[0]}
        out = self.lm(input_ids=input_ids, use_cache=False, output_hidden_states=need_values, **kw)
        res = {"logits": out.logits}
        if need_values:
            res["values"] = self.value_head(out.hidden_states[-1])
        return res


def takes_position_ids(model: nn.Module) -> bool:
    """Whether an EngineModel's language model takes position_ids (transformers' causal LMs do):
    the per-example paths pass each example's positions so a batch of one sees what the batch saw."""
    import inspect

    lm = getattr(model, "lm", None)
    if lm is None or not hasattr(lm, "config"):
        return False
    try:
        return "position_ids" in inspect.signature(lm.forward).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class LoadedModel:
    """A model held by the worker under a handle, with everything a step needs."""

    handle: str
    model: EngineModel
    tokenizer: Any
    device: torch.device
    lora: LoraConfig
    source: dict
    trainable: dict[str, nn.Parameter]
    optimizer: Any = None           # optim.DPAdamW / optim.DPSGD, None for frozen models
    optimizer_spec: dict = field(default_factory=dict)
    backend: str = "builtin"
    step: int = 0
    base_in_checkpoint: bool = False  # save frozen base weights too (they are not reproducible from the spec)
    train_base: bool = False
    autocast: torch.dtype | None = None  # ModelSpec dtype "autocast_bfloat16": bf16 autocast, float32 weights
    per_example: str = "auto"  # "auto": ghost norms where exact (ghost_norms.py), else torch.func; "vmap"

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def base_names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters() if n not in self.trainable]


@dataclass(frozen=True)
class TinyConfig:
    """The built-in GPT-2-architecture model (TinyModelSpec in worker.proto)."""
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int = 0            # 0: 256
    tokenizer_dir: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """A model as asked for (ModelSpec in worker.proto, converted in handlers/): one source of
    tiny, hf_path and entry_point, then LoRA, heads and where to put it."""
    tiny: TinyConfig | None = None
    hf_path: str = ""
    entry_point: str = ""
    # reward-only sources (engine/ngram.py, hf_reward.py, python_reward.py): no LoRA, heads or generation
    ngram: Any = None               # ngram.NgramConfig
    hf_classifier: Any = None       # hf_reward.HfClassifierConfig
    python_reward: Any = None       # python_reward.PythonRewardConfig
    lora: LoraConfig = field(default_factory=LoraConfig)
    value_head: bool = False
    reward_head: bool = False
    reward_pooling: str = "last"    # models.REWARD_POOLINGS: where the reward head's sequence reward comes from
    train_base: bool = False
    init_checkpoint: str = ""
    device: str = ""                # "": the worker's default device
    init_seed: int = 0
    dtype: str = ""                 # "": float32

    def source_kind(self) -> str:
        kinds = [k for k, on in (("tiny", self.tiny is not None), ("hf_path", bool(self.hf_path)),
                                 ("entry_point", bool(self.entry_point)), ("ngram", self.ngram is not None),
                                 ("hf_classifier", self.hf_classifier is not None),
                                 ("python_reward", self.python_reward is not None)) if on]
        if len(kinds) != 1:
            raise invalid_argument("a model needs exactly one source: tiny, hf_path, entry_point, ngram, "
                                   "hf_classifier or python_reward",
                                   given=",".join(kinds))
        return kinds[0]


def _gpt2_tiny(spec: TinyConfig, tokenizer, dtype) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    if spec.n_layer == 0 or spec.n_head == 0 or spec.n_embd == 0:
        raise invalid_argument("tiny model needs n_layer, n_head and n_embd > 0")
    if spec.n_embd % spec.n_head:
        raise invalid_argument(f"n_embd {spec.n_embd} is not divisible by n_head {spec.n_head}")
    cfg = GPT2Config(
        vocab_size=len(tokenizer), n_positions=spec.n_positions or 256, n_embd=spec.n_embd,
        n_layer=spec.n_layer, n_head=spec.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # GPT-2's tanh GELU as one fused op: same function as "gelu_new", and several times faster
        # under vmap than gelu_new's chain of elementwise ops (per-example gradients).
        activation_function="gelu_pytorch_tanh",
    )
    return GPT2LMHeadModel._from_config(cfg, attn_implementation="eager", dtype=dtype)


def _hf_local(path: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hf_reward import hf_location
    from .tokenizer import ensure_pad

    # a directory, or a Hugging Face id read from the local cache (HF_HOME) only: never downloaded
    path = hf_location(path, "model (model.hfPath)")
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype, attn_implementation="eager")
    except (ValueError, TypeError):
        lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ensure_pad(tok)
    return lm, tok


def _entry_point(ep: str):
    from .tokenizer import ensure_pad

    mod_name, sep, fn_name = ep.partition(":")
    if not sep or not mod_name or not fn_name:
        raise invalid_argument(f"entry point {ep!r} is not of the form package.module:factory")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise not_found(f"cannot import entry point {ep!r}: {e}") from e
    result = fn()
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise unsupported_model(f"entry point {ep!r} must return (torch.nn.Module, tokenizer)")
    ensure_pad(result[1])
    return result


def _hidden_size(lm: nn.Module) -> int:
    cfg = getattr(lm, "config", None)
    for key in ("hidden_size", "n_embd", "d_model"):
        v = getattr(cfg, key, None)
        if isinstance(v, int):
            return v
    emb = lm.get_input_embeddings() if hasattr(lm, "get_input_embeddings") else None
    if emb is not None:
        return emb.weight.shape[1]
    raise unsupported_model("cannot find the model's hidden size (config.hidden_size or input embeddings)")


def build_model(handle: str, spec: ModelConfig, device: str, optimizer_spec: OptimizerConfig | None = None,
                backend: str = "") -> LoadedModel:
    """Builds a LoadedModel from a ModelConfig, with an optimizer when one is given."""
    dtype = torch.float32 if spec.dtype in AUTOCAST else DTYPES.get(spec.dtype)
    if dtype is None:
        raise invalid_argument(f"unknown dtype {spec.dtype!r}", supported=",".join([*(k for k in DTYPES if k), *AUTOCAST]))
    if backend not in ("", "builtin", "opacus"):
        raise invalid_argument(f"unknown backend {backend!r}", supported="builtin,opacus")
    if backend == "opacus":
        from .opacus_backend import require_opacus

        require_opacus()
    with torch.random.fork_rng(devices=[]):  # seed weight init without touching the caller's RNG
        torch.manual_seed(int(spec.init_seed))
        return _build(handle, spec, device, optimizer_spec, backend, dtype)


def _build(handle: str, spec: ModelConfig, device: str, optimizer_spec: OptimizerConfig | None, backend: str,
           dtype) -> LoadedModel:
    from . import checkpoint, optim
    from .tokenizer import load_tokenizer

    source_kind = spec.source_kind()
    if source_kind in REWARD_SOURCES:
        return _build_reward_source(handle, source_kind, spec, device, optimizer_spec, dtype)
    if spec.tiny is not None:
        tok = load_tokenizer(spec.tiny.tokenizer_dir)
        lm = _gpt2_tiny(spec.tiny, tok, dtype)
        source = {"tiny": {"n_layer": spec.tiny.n_layer, "n_head": spec.tiny.n_head, "n_embd": spec.tiny.n_embd,
                           "n_positions": spec.tiny.n_positions or 256, "tokenizer_dir": spec.tiny.tokenizer_dir}}
    elif source_kind == "hf_path":
        lm, tok = _hf_local(spec.hf_path, dtype)
        source = {"hf_path": spec.hf_path}
    else:
        lm, tok = _entry_point(spec.entry_point)
        lm = lm.to(dtype)
        source = {"entry_point": spec.entry_point}

    gen = torch.Generator().manual_seed(int(spec.init_seed))
    lora = spec.lora
    heads = bool(spec.value_head) or bool(spec.reward_head)
    if heads and not hasattr(lm, "config"):
        raise unsupported_model("value and reward heads need a transformers-style model (with .config and hidden_states)")
    model = EngineModel(lm, _hidden_size(lm) if heads else 0, bool(spec.value_head), bool(spec.reward_head),
                        spec.reward_pooling if spec.reward_head else "last")
    for head in (model.value_head, model.reward_head):
        if head is not None:
            head.reset(gen)
    for p in model.parameters():
        p.requires_grad_(False)
    base_from_ckpt = False
    if spec.init_checkpoint:
        base_from_ckpt = checkpoint.init_from_checkpoint(model, spec.init_checkpoint)
    if lora.enabled:
        apply_lora(model.lm, lora, gen)
    dev = torch.device(spec.device or device)
    model.to(device=dev, dtype=dtype)
    for name, p in model.named_parameters():
        trainable = ("lora_" in name.rsplit(".", 1)[-1] or name.startswith(("value_head.", "reward_head."))
                     or bool(spec.train_base))
        p.requires_grad_(trainable)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    loaded = LoadedModel(
        handle=handle, model=model, tokenizer=tok, device=dev, lora=lora, source=source, trainable=trainable,
        backend=backend or "builtin", base_in_checkpoint=bool(spec.train_base) or base_from_ckpt or source_kind == "tiny",
        train_base=bool(spec.train_base), autocast=AUTOCAST.get(spec.dtype),
    )
    if optimizer_spec is not None:
        loaded.optimizer, loaded.optimizer_spec = optim.from_spec(optimizer_spec, trainable)
    return loaded


REWARD_SOURCES = ("ngram", "hf_classifier", "python_reward")


def _build_reward_source(handle: str, kind: str, spec: ModelConfig, device: str,
                         optimizer_spec: OptimizerConfig | None, dtype) -> LoadedModel:
    """The reward-only sources score texts or token rows; LoRA, heads and base training do not apply."""
    if spec.lora.enabled or spec.value_head or spec.train_base:
        raise invalid_argument(f"a {kind} reward takes no LoRA, value head or train_base")
    dev = torch.device(spec.device or device)
    if kind == "ngram":
        from .ngram import build
        return build(handle, spec.ngram, dev, optimizer_spec, spec.init_checkpoint, dtype)
    if optimizer_spec is not None:
        raise invalid_argument(f"a {kind} reward is not trainable (load it without an optimizer)")
    if kind == "hf_classifier":
        from .hf_reward import build as build_hf
        return build_hf(handle, spec.hf_classifier, dev, dtype)
    from .python_reward import build as build_py
    return build_py(handle, spec.python_reward, dev)


def model_summary(m: LoadedModel) -> dict:
    cfg = getattr(m.model.lm, "config", None)
    max_pos = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 0
    return {
        "handle": m.handle,
        "total_parameters": sum(p.numel() for p in m.model.parameters()),
        "trainable_parameters": sum(p.numel() for p in m.trainable.values()),
        "trainable_names": [canonical_name(n) for n in m.trainable],
        "vocab_size": len(m.tokenizer),
        "max_positions": int(max_pos),
        "eos_token_id": m.eos_id,
        "pad_token_id": m.pad_id,
        "device": str(m.device),
        "backend": m.backend,
    }
