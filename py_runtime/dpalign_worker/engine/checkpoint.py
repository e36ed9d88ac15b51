"""Checkpoints: safetensors for weights and optimizer state, plus manifest.json. Never pickle.

  weights.safetensors    trainable tensors (LoRA, heads, or everything with train_base), plus the
                         frozen base when it is not reproducible from the spec (tiny models,
                         bases loaded from a checkpoint); names as in the model without LoRA
                         wrappers (lora.canonical_name)
  optimizer.safetensors  optimizer state (exp_avg.<name>, exp_avg_sq.<name> / momentum.<name>)
  manifest.json          format, step, LoRA config, heads, optimizer config, metadata, files,
                         integrity (SHA-256 and size of every other file), and manifest_sha256
                         (over the manifest's own canonical JSON without that field)

Integrity: every load checks the sizes and SHA-256 of the files it reads, and the manifest's own
hash, before parsing anything, so a truncated copy, a disk error or an edited file fails with a
CheckpointError that names the file and the fix instead of resuming from wrong state. (A hash in
the same directory detects accidents and naive edits, not a forger who rewrites the manifest
too.) Manifests of format 1 had no hashes and are refused.

`save` + `restore` (LoadCheckpointRequest) resume exactly: weights, optimizer moments and the step
counter (which also seeds the noise in seeded mode). `init_from_checkpoint` (ModelSpec.init_checkpoint)
starts a new model from a checkpoint's function: base weights are loaded, LoRA adapters are merged
into them, and heads are taken when the new model has them.
"""
from __future__ import annotations

import hashlib
import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import checkpoint_invalid, checkpoint_missing, invalid_argument
from .lora import canonical_name, delta_weight, parts_for

FORMAT = "dpalign-checkpoint/2"  # 2: integrity (SHA-256 per file) and manifest_sha256
OLD_FORMATS = ("dpalign-checkpoint/1",)
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
DATA_FILES = (WEIGHTS, OPTIMIZER)  # the only names a manifest may list: no paths out of the directory
_FIX = "restore it, or delete this checkpoint and rerun the stage that wrote it"


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
        # engine models only: the reward-only sources (n-gram, HF, Python) have no pooling to choose
        "reward_pooling": getattr(m.model, "reward_pooling", None),
        "train_base": m.train_base, "includes_base": m.base_in_checkpoint,
        "trainable": [canonical_name(n) for n in m.trainable], "optimizer": opt_cfg,
        "metadata": dict(metadata or {}), "files": files + [MANIFEST],
        # hashed from what is on disk after writing, so the record covers the bytes a load will read
        "integrity": {name: _file_record(os.path.join(out_dir, name)) for name in files},
    }
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


# -- integrity -----------------------------------------------------------------------------------
def _sha256(path: str) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in 1 MiB blocks (checkpoints can be gigabytes)."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def _file_record(path: str) -> dict:
    digest, size = _sha256(path)
    return {"sha256": digest, "bytes": size}


def _manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON without manifest_sha256: independent of whitespace
    and key order, so it checks content, not formatting."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_manifest(ckpt_dir: str) -> dict:
    """The manifest, after checking its format and its own hash (not yet the data files: see
    verify_file)."""
    path = os.path.join(ckpt_dir, MANIFEST)
    if not os.path.isfile(path):
        raise checkpoint_missing(f"no checkpoint at {ckpt_dir} ({MANIFEST} missing); rerun the stage that writes it, "
                                 "or point to a directory that holds a dpalign checkpoint", file=path, dir=ckpt_dir)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise checkpoint_invalid(f"checkpoint {path}: unreadable ({e}); {_FIX}", file=path) from None
    if not isinstance(manifest, dict):
        raise checkpoint_invalid(f"checkpoint {path}: not a JSON object; {_FIX}", file=path)
    fmt = manifest.get("format")
    if fmt in OLD_FORMATS:
        raise checkpoint_invalid(
            f"checkpoint {path}: format {fmt} has no SHA-256 of its files and cannot be verified; "
            f"delete this checkpoint and rerun the stage that wrote it (this dpalign writes {FORMAT})",
            file=path, format=fmt)
    if fmt != FORMAT:
        raise checkpoint_invalid(f"checkpoint {path}: not a {FORMAT} manifest (format {fmt!r}); {_FIX}",
                                 file=path, format=fmt)
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise checkpoint_invalid(f"checkpoint {path}: SHA-256 mismatch (the manifest was edited or corrupted); {_FIX}",
                                 file=path)
    integrity = manifest.get("integrity")
    if not isinstance(integrity, dict) or WEIGHTS not in integrity or not set(integrity) <= set(DATA_FILES) \
            or (manifest.get("optimizer") and OPTIMIZER not in integrity):
        raise checkpoint_invalid(f"checkpoint {path}: its integrity record does not list the checkpoint's files; {_FIX}",
                                 file=path)
    return manifest


def verify_file(ckpt_dir: str, manifest: dict, name: str) -> str:
    """Checks one data file against the manifest (present, same size, same SHA-256) and returns
    its path. Hashing before parsing means a damaged file never reaches safetensors or the model."""
    path = os.path.join(ckpt_dir, name)
    record = manifest["integrity"].get(name)
    if not isinstance(record, dict):
        raise checkpoint_invalid(f"checkpoint {ckpt_dir}/{MANIFEST}: no SHA-256 recorded for {name}; {_FIX}", file=path)
    if not os.path.isfile(path):
        raise checkpoint_missing(f"checkpoint {path}: missing; {_FIX}", file=path)
    digest, size = _sha256(path)
    if size != record.get("bytes"):
        raise checkpoint_invalid(
            f"checkpoint {path}: {size} bytes where the manifest records {record.get('bytes')} "
            f"({'truncated' if isinstance(record.get('bytes'), int) and size < record['bytes'] else 'modified'}); {_FIX}",
            file=path, bytes=size, expected_bytes=record.get("bytes"))
    if digest != record.get("sha256"):
        raise checkpoint_invalid(f"checkpoint {path}: SHA-256 mismatch (corrupted or modified); {_FIX}",
                                 file=path, sha256=digest, expected_sha256=record.get("sha256"))
    return path


def _load(ckpt_dir: str, manifest: dict, name: str) -> dict[str, torch.Tensor]:
    path = verify_file(ckpt_dir, manifest, name)
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:  # verified bytes that still do not parse: a writer bug
        raise checkpoint_invalid(f"checkpoint {path}: not a readable safetensors file ({e}); {_FIX}", file=path) from None


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise invalid_argument(f"checkpoint tensor {name!r} has shape {list(src.shape)}, the model {list(dst.shape)}")
    with torch.no_grad():
        dst.copy_(src.to(device=dst.device, dtype=dst.dtype))


def _check_pooling(model, manifest: dict, ckpt_dir: str) -> None:
    """A reward head trained to be read one way scores nonsense when read another: refuse that."""
    wanted = getattr(model, "reward_pooling", None)
    if manifest.get("reward_head") and getattr(model, "reward_head", None) is not None and wanted is not None:
        saved = manifest.get("reward_pooling") or "last"  # checkpoints from before pooling existed: last
        if saved != wanted:
            raise invalid_argument(f"checkpoint {ckpt_dir} holds a reward head trained with reward pooling {saved!r}; "
                                   f"this model asks for {wanted!r} (set rm.pooling to {saved!r})")


def restore(m, ckpt_dir: str) -> dict:
    """Restores a checkpoint into a model built with the same spec (exact resume)."""
    manifest = read_manifest(ckpt_dir)
    _check_pooling(m.model, manifest, ckpt_dir)
    weights = _load(ckpt_dir, manifest, WEIGHTS)
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
        state = _load(ckpt_dir, manifest, OPTIMIZER)
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
    _check_pooling(model, manifest, ckpt_dir)
    weights = _load(ckpt_dir, manifest, WEIGHTS)
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
