"""Checkpoints: safetensors for weights and optimizer state, plus manifest.json. Never pickle.

  weights.safetensors    trainable tensors (LoRA, heads, or everything with train_base), plus the
                         frozen base when it is not reproducible from the spec (tiny models,
                         bases loaded from a checkpoint); names as in the model without LoRA
                         wrappers (lora.canonical_name)
  optimizer.safetensors  optimizer state (exp_avg.<name>, exp_avg_sq.<name> / momentum.<name>)
  manifest.json          format, step, LoRA config, heads, optimizer config, metadata, files

`save` + `restore` (LoadCheckpointRequest) resume exactly: weights, optimizer moments and the step
counter (which also seeds the noise in seeded mode). `init_from_checkpoint` (ModelSpec.init_checkpoint)
starts a new model from a checkpoint's function: base weights are loaded, LoRA adapters are merged
into them, and heads are taken when the new model has them.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file

from ..errors import invalid_argument, not_found
from .lora import canonical_name, delta_weight, parts_for

FORMAT = "dpalign-checkpoint/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def save(m, out_dir: str, metadata: dict[str, str] | None = None) -> dict:
    if not out_dir:
        raise invalid_argument("save_checkpoint needs dir")
    os.makedirs(out_dir, exist_ok=True)
    weights = {}
    for name, p in m.model.named_parameters():
        if name in m.trainable or m.base_in_checkpoint:
            weights[canonical_name(name)] = _cpu(p)
    files = [WEIGHTS]
    save_file(weights, os.path.join(out_dir, WEIGHTS))
    opt_cfg = None
    if m.optimizer is not None:
        save_file({k: _cpu(v) for k, v in m.optimizer.state.items()} or {"_empty": torch.zeros(0)},
                  os.path.join(out_dir, OPTIMIZER))
        files.append(OPTIMIZER)
        opt_cfg = dict(m.optimizer_spec, steps=m.optimizer.steps)
    manifest = {
        "format": FORMAT, "step": m.step, "source": m.source, "lora": m.lora.to_json(),
        "value_head": m.model.value_head is not None, "reward_head": m.model.reward_head is not None,
        "train_base": m.train_base, "includes_base": m.base_in_checkpoint,
        "trainable": [canonical_name(n) for n in m.trainable], "optimizer": opt_cfg,
        "metadata": dict(metadata or {}), "files": files + [MANIFEST],
    }
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


def read_manifest(ckpt_dir: str) -> dict:
    path = os.path.join(ckpt_dir, MANIFEST)
    if not os.path.isfile(path):
        raise not_found(f"no checkpoint at {ckpt_dir!r} ({MANIFEST} missing)", dir=ckpt_dir)
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise invalid_argument(f"{ckpt_dir!r} is not a {FORMAT} checkpoint", format=manifest.get("format"))
    return manifest


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise invalid_argument(f"checkpoint tensor {name!r} has shape {list(src.shape)}, the model {list(dst.shape)}")
    with torch.no_grad():
        dst.copy_(src.to(device=dst.device, dtype=dst.dtype))


def restore(m, ckpt_dir: str) -> dict:
    """Restores a checkpoint into a model built with the same spec (exact resume)."""
    manifest = read_manifest(ckpt_dir)
    weights = load_file(os.path.join(ckpt_dir, WEIGHTS))
    params = {canonical_name(n): p for n, p in m.model.named_parameters()}
    missing = [canonical_name(n) for n in m.trainable if canonical_name(n) not in weights]
    if missing:
        raise invalid_argument("checkpoint lacks trainable tensors of this model (was it saved from another spec?)",
                               missing=",".join(missing[:10]))
    for name, t in weights.items():
        if name not in params:
            raise invalid_argument(f"checkpoint tensor {name!r} does not exist in model {m.handle!r}")
        _copy(params[name], t, name)
    if m.optimizer is not None and manifest.get("optimizer"):
        state = load_file(os.path.join(ckpt_dir, OPTIMIZER))
        state.pop("_empty", None)
        if set(state) != set(m.optimizer.state) and m.optimizer.state:
            raise invalid_argument("checkpoint optimizer state does not match this model's optimizer")
        m.optimizer.state = {k: v.to(m.device) for k, v in state.items()}
        m.optimizer.steps = int(manifest["optimizer"].get("steps", manifest["step"]))
    m.step = int(manifest["step"])
    return manifest


def init_from_checkpoint(model, ckpt_dir: str) -> bool:
    """Loads a checkpoint's weights into a freshly built EngineModel *before* LoRA is applied.
    Returns True when base weights came from the checkpoint."""
    manifest = read_manifest(ckpt_dir)
    weights = load_file(os.path.join(ckpt_dir, WEIGHTS))
    params = dict(model.named_parameters())
    lora = manifest.get("lora") or {}
    scale = (lora.get("alpha") or lora.get("rank") or 1) / (lora.get("rank") or 1)
    base_loaded = False
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in weights.items():
        prefix, _, leaf = name.rpartition(".")
        if leaf in ("lora_A", "lora_B"):
            adapters.setdefault(prefix, {})[leaf] = t
        elif name.startswith(("value_head.", "reward_head.")):
            if name in params:
                _copy(params[name], t, name)
        elif name in params:
            _copy(params[name], t, name)
            base_loaded = True
        else:
            raise invalid_argument(f"checkpoint tensor {name!r} does not exist in the model being built")
    for prefix, ab in adapters.items():
        target = model.get_submodule(prefix)
        wname = prefix + ".weight"
        if wname not in params:
            raise invalid_argument(f"cannot merge LoRA adapter {prefix!r}: no base weight {wname!r}")
        parts = parts_for(prefix, tuple(lora.get("target_modules") or ()))
        delta = delta_weight(target, ab["lora_A"].float(), ab["lora_B"].float(), scale, parts)
        with torch.no_grad():
            params[wname].add_(delta.to(params[wname]))
        base_loaded = True
    return base_loaded
