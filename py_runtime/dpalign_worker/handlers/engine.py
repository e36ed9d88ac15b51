"""Protobuf handlers of the engine: thin adapters between worker.proto messages and
dpalign_worker.engine (which knows nothing of protobuf)."""
from __future__ import annotations

from ..engine import checkpoint, dp_step, generation, tokenizer
from ..engine.models import build_model, model_summary
from ..errors import invalid_argument, not_found
from ..protocol import worker_pb2 as pb
from ..registry import WorkerContext, handler
from ..tensors import batch_from_proto, batch_to_proto


def _model(ctx: WorkerContext, handle: str):
    m = ctx.models.get(handle)
    if m is None:
        raise not_found(f"no model loaded under handle {handle!r}", loaded=",".join(sorted(ctx.models)))
    return m


@handler("load_model")
def load_model(req: pb.LoadModelRequest, ctx: WorkerContext) -> pb.ModelInfo:
    if not req.handle:
        raise invalid_argument("load_model needs a handle")
    with ctx.model_lock(req.handle):
        opt = req.optimizer if req.HasField("optimizer") else None
        m = build_model(req.handle, req.spec, ctx.device, opt, req.backend)
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
    dp = dp_step.DpConfig(
        enabled=req.dp.enabled, noise_multiplier=req.dp.noise_multiplier, max_grad_norm=req.dp.max_grad_norm,
        expected_batch_size=req.dp.expected_batch_size, secure_noise=req.dp.secure_noise,
        noise_seed=req.dp.noise_seed,
    )
    with ctx.model_lock(req.handle):
        m = _model(ctx, req.handle)
        r = dp_step.train_step(m, req.loss, batch_from_proto(req.batch), dp, int(req.micro_batch_size),
                               float(req.lr), dict(req.loss_params))
    return pb.TrainStepReply(
        step=r.step, examples=r.examples, loss=r.loss, grad_norm_quantiles=r.grad_norm_quantiles,
        fraction_clipped=r.fraction_clipped, noise_multiplier=r.noise_multiplier, max_grad_norm=r.max_grad_norm,
        dp=r.dp, noise_mode=r.noise_mode, noise_seed=r.noise_seed, noise_std=r.noise_std, metrics=r.metrics,
    )


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
