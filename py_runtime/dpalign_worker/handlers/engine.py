"""Protobuf handlers of the engine: thin adapters between worker.proto messages and
dpalign_worker.engine (which knows nothing of protobuf). Each message the engine takes or gives is
converted here, once each way: ModelSpec, OptimizerSpec, DpSpec and PpoParams to the engine's
dataclasses, enums to and from their names, StepReport to TrainStepReply."""
from __future__ import annotations

import dataclasses

from ..engine import checkpoint, dp_step, generation, tokenizer
from ..engine.lora import LoraConfig
from ..engine.ngram import NgramConfig
from ..engine.hf_reward import HfClassifierConfig, TextReward, score_rows
from ..engine.models import ModelConfig, TinyConfig, build_model, model_summary
from ..engine.objectives import LossParams, PpoParams
from ..engine.optim import OptimizerConfig
from ..engine.python_reward import PythonRewardConfig
from ..errors import invalid_argument, not_found
from ..protocol import worker_pb2 as pb
from ..registry import WorkerContext, handler
from ..tensors import batch_from_proto, batch_to_proto


def _model(ctx: WorkerContext, handle: str):
    m = ctx.models.get(handle)
    if m is None:
        raise not_found(f"no model loaded under handle {handle!r}", loaded=",".join(sorted(ctx.models)))
    return m


def _enum_name(enum, value: int, what: str) -> str:
    """An enum value's name; the zero value (unspecified) and unknown numbers are refused."""
    name = enum.Name(value) if value in enum.values() else None
    if name is None or value == 0:
        raise invalid_argument(f"{what} is not set or unknown ({value})",
                               supported=",".join(n for n, v in enum.items() if v != 0))
    return name


def reward_sources(spec: pb.ModelSpec) -> dict:
    """The reward-only sources of a ModelSpec as engine dataclasses (at most one is set: a oneof)."""
    which = spec.WhichOneof("source")
    if which == "ngram":
        n = spec.ngram
        return {"ngram": NgramConfig(int(n.buckets), int(n.max_n), n.tokenizer_dir)}
    if which == "hf_classifier":
        h = spec.hf_classifier
        return {"hf_classifier": HfClassifierConfig(h.path, int(h.label_index), h.tokenizer, h.tokenizer_dir, int(h.max_tokens))}
    if which == "python_reward":
        p = spec.python_reward
        return {"python_reward": PythonRewardConfig(p.function, tuple(p.python_path), p.tokenizer_dir)}
    return {}


def model_config(spec: pb.ModelSpec) -> ModelConfig:
    t = spec.tiny
    return ModelConfig(
        **reward_sources(spec),
        tiny=TinyConfig(t.n_layer, t.n_head, t.n_embd, t.n_positions, t.tokenizer_dir) if spec.HasField("tiny") else None,
        hf_path=spec.hf_path, entry_point=spec.entry_point,
        lora=LoraConfig(int(spec.lora.rank), float(spec.lora.alpha), float(spec.lora.dropout),
                        tuple(spec.lora.target_modules)),
        value_head=spec.value_head, reward_head=spec.reward_head, train_base=spec.train_base,
        reward_pooling=pb.RewardPooling.Name(spec.reward_pooling) if spec.reward_pooling else "last",
        init_checkpoint=spec.init_checkpoint, device=spec.device, init_seed=int(spec.init_seed), dtype=spec.dtype,
    )


def optimizer_config(spec: pb.OptimizerSpec) -> OptimizerConfig:
    return OptimizerConfig(
        name=_enum_name(pb.Optimizer, spec.name, "optimizer name"), lr=spec.lr, weight_decay=spec.weight_decay,
        beta1=spec.beta1, beta2=spec.beta2, eps=spec.eps, momentum=spec.momentum,
    )


def loss_params(req: pb.TrainStepRequest) -> LossParams | None:
    """The loss's parameters as the engine's dataclass; every field must be set (no defaults here)."""
    which = req.WhichOneof("params")
    if which is None:
        return None
    if which == "ppo":
        p = req.ppo
        missing = [f for f in ("clip_range", "clip_range_value", "vf_coef") if not p.HasField(f)]
        if missing:
            raise invalid_argument(f"PpoParams needs every field; missing {missing}")
        return PpoParams(clip_range=p.clip_range, clip_range_value=p.clip_range_value, vf_coef=p.vf_coef)
    raise invalid_argument(f"unknown loss parameters {which!r}")


def dp_config(dp: pb.DpSpec) -> dp_step.DpConfig:
    return dp_step.DpConfig(
        enabled=dp.enabled, noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
        expected_batch_size=dp.expected_batch_size, secure_noise=dp.secure_noise, noise_seed=dp.noise_seed,
    )


def step_reply(r: dp_step.StepReport) -> pb.TrainStepReply:
    fields = dataclasses.asdict(r)
    fields["noise_mode"] = pb.NoiseMode.Value(r.noise_mode)
    return pb.TrainStepReply(**fields)


@handler("load_model")
def load_model(req: pb.LoadModelRequest, ctx: WorkerContext) -> pb.ModelInfo:
    if not req.handle:
        raise invalid_argument("load_model needs a handle")
    with ctx.model_lock(req.handle):
        opt = optimizer_config(req.optimizer) if req.HasField("optimizer") else None
        m = build_model(req.handle, model_config(req.spec), ctx.device, opt, req.backend)
        ctx.models[req.handle] = m
        return pb.ModelInfo(**model_summary(m))


@handler("unload_model")
def unload_model(req: pb.UnloadModelRequest, ctx: WorkerContext) -> pb.UnloadModelReply:
    with ctx.model_lock(req.handle):
        _model(ctx, req.handle)
        del ctx.models[req.handle]
    return pb.UnloadModelReply()


@handler("train_tokenizer")
def train_tokenizer(req: pb.TrainTokenizerRequest, ctx: WorkerContext) -> pb.TrainTokenizerReply:
    out_dir, size = tokenizer.train_tokenizer(list(req.texts), int(req.vocab_size), req.out_dir)
    return pb.TrainTokenizerReply(dir=out_dir, vocab_size=size)


@handler("tokenize")
def tokenize(req: pb.TokenizeRequest, ctx: WorkerContext) -> pb.TensorBatch:
    m = _model(ctx, req.handle)
    return batch_to_proto(tokenizer.encode(m.tokenizer, list(req.texts), int(req.max_tokens), req.append_eos))


@handler("decode")
def decode(req: pb.DecodeRequest, ctx: WorkerContext) -> pb.DecodeReply:
    m = _model(ctx, req.handle)
    b = batch_from_proto(req.batch)
    if "input_ids" not in b or "lengths" not in b:
        raise invalid_argument("decode needs input_ids and lengths")
    return pb.DecodeReply(texts=tokenizer.decode(m.tokenizer, b["input_ids"].long(), b["lengths"].long()))


@handler("train_step")
def train_step(req: pb.TrainStepRequest, ctx: WorkerContext) -> pb.TrainStepReply:
    loss = _enum_name(pb.Loss, req.loss, "loss")
    params = loss_params(req)
    with ctx.model_lock(req.handle):
        m = _model(ctx, req.handle)
        r = dp_step.train_step(m, loss, batch_from_proto(req.batch), dp_config(req.dp), int(req.micro_batch_size),
                               float(req.lr), params)
    return step_reply(r)


@handler("generate")
def generate(req: pb.GenerateRequest, ctx: WorkerContext) -> pb.GenerateReply:
    with ctx.model_lock(req.handle):
        m = _model(ctx, req.handle)
        b = batch_from_proto(req.prompts)
        if "input_ids" not in b or "lengths" not in b:
            raise invalid_argument("generate needs prompts input_ids and lengths")
        out = generation.generate(
            m, b["input_ids"].long(), b["lengths"].long(), int(req.max_new_tokens), int(req.min_new_tokens),
            float(req.temperature), int(req.top_k), float(req.top_p), int(req.seed), req.return_values,
        )
        texts = tokenizer.decode(m.tokenizer, out["response_ids"], out["response_lengths"])
    return pb.GenerateReply(batch=batch_to_proto(out), texts=texts)


@handler("score_sequences")
def score_sequences(req: pb.ScoreSequencesRequest, ctx: WorkerContext) -> pb.TensorBatch:
    with ctx.model_lock(req.handle):
        m = _model(ctx, req.handle)
        if isinstance(m.model, TextReward):  # hf / python rewards score decoded texts
            if req.logprobs or req.values or not req.rewards:
                raise invalid_argument(f"model {req.handle!r} is a reward of texts: ask score_sequences for rewards only")
            return batch_to_proto(score_rows(m, batch_from_proto(req.batch)))
        out = generation.score(m, batch_from_proto(req.batch), req.logprobs, req.values, req.rewards,
                               int(req.micro_batch_size))
    return batch_to_proto(out)


@handler("save_checkpoint")
def save_checkpoint(req: pb.SaveCheckpointRequest, ctx: WorkerContext) -> pb.CheckpointInfo:
    with ctx.model_lock(req.handle):
        man = checkpoint.save(_model(ctx, req.handle), req.dir, dict(req.metadata))
    return pb.CheckpointInfo(dir=req.dir, step=man["step"], files=man["files"], metadata=man["metadata"])


@handler("load_checkpoint")
def load_checkpoint(req: pb.LoadCheckpointRequest, ctx: WorkerContext) -> pb.CheckpointInfo:
    with ctx.model_lock(req.handle):
        man = checkpoint.restore(_model(ctx, req.handle), req.dir)
    return pb.CheckpointInfo(dir=req.dir, step=man["step"], files=man["files"], metadata=man["metadata"])
