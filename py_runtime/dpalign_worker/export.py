"""Export a dpalign checkpoint to Hugging Face formats (`dpalign export`; run as
`python -m dpalign_worker.export --checkpoint DIR --format peft|merged --out DIR`).

A small entry point beside the worker rather than a worker request: exporting is a one-off,
file-to-file job with no private data and no decision of the control plane in it, so it needs
neither the protocol nor a running worker; tensors stay in Python, and the checkpoint is read with
the engine's own verified loader (SHA-256 of every file before parsing).

The model is rebuilt exactly as the worker builds it (engine.models.build_model from the spec the
manifest records, then checkpoint.restore), so the export starts from the function dpalign's
forward computes. Then:

  peft    the adapter as a peft LoRA directory (adapter_config.json, adapter_model.safetensors,
          README.md), written by peft itself from a peft model whose LoRA weights are copied from
          the checkpoint. The base it applies to is the checkpoint's frozen base: for the built-in
          tiny model (and any base that came from a checkpoint, e.g. the PPO policy's base, which
          is the SFT model with its LoRA merged) that base is not on any hub, so it is written
          with save_pretrained to OUT/base (config.json, model.safetensors, tokenizer) and
          adapter_config.base_model_name_or_path points there. For a Hugging Face base that the
          checkpoint does not include, base_model_name_or_path is that model's path.
  merged  a full save_pretrained directory (config, model.safetensors, tokenizer) with every LoRA
          update B A * alpha/r added to its base weight.

GPT-2's fused c_attn computes query, key and value in one Conv1D. A dpalign target `c_attn[q,v]`
adapts only the query and value thirds (lora_B has 2/3 of the rows); peft has no such target, so
the adapter is written as a full-width `c_attn` LoRA whose lora_B rows for the key third are zero:
B_full A x = [B_q A x, 0, B_v A x], the same product, so the logits are identical (the adapter's
README and dpalign_export.json say so). Value and reward heads are not part of a causal LM and are
left out (the value head only serves PPO's training). After writing, the export reloads what it
wrote (peft on the exported base, or AutoModelForCausalLM) and compares logits with dpalign's
forward on a fixed input; the largest difference is reported and must be below 1e-4.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import torch

from .engine import checkpoint
from .engine.lora import FUSED_PARTS, LoraConfig, LoraLayer, delta_weight, parse_target
from .engine.models import ModelConfig, TinyConfig, build_model
from .errors import WorkerError, invalid_argument, unsupported_model

FORMATS = ("peft", "merged")
TOLERANCE = 1e-4
EXPORT_META = "dpalign_export.json"


def load_checkpoint_model(ckpt_dir: str):
    """The LoadedModel a worker would hold after restoring `ckpt_dir` (CPU, float32)."""
    manifest = checkpoint.read_manifest(ckpt_dir)
    source = manifest.get("source") or {}
    lora = manifest.get("lora") or {}
    lcfg = LoraConfig(int(lora.get("rank") or 0), float(lora.get("alpha") or 0.0), float(lora.get("dropout") or 0.0),
                      tuple(lora.get("target_modules") or ()))
    if "tiny" in source:
        t = source["tiny"]
        tok_dir = t.get("tokenizer_dir", "")
        if not os.path.isdir(tok_dir):
            raise invalid_argument(f"the checkpoint's tokenizer directory {tok_dir!r} does not exist (the tiny model's "
                                   "tokenizer lives in the pre-training cache); restore the cache or rerun the pipeline")
        spec = ModelConfig(tiny=TinyConfig(int(t["n_layer"]), int(t["n_head"]), int(t["n_embd"]), int(t.get("n_positions") or 0),
                                           tok_dir), lora=lcfg)
    elif "hf_path" in source:
        spec = ModelConfig(hf_path=source["hf_path"], lora=lcfg)
    else:
        raise unsupported_model("export supports the built-in tiny model and Hugging Face models; this checkpoint's "
                                f"model came from {sorted(source)}")
    spec = ModelConfig(tiny=spec.tiny, hf_path=spec.hf_path, lora=lcfg, value_head=bool(manifest.get("value_head")),
                       reward_head=bool(manifest.get("reward_head")), train_base=bool(manifest.get("train_base")),
                       reward_pooling=str(manifest.get("reward_pooling") or "last"))
    m = build_model("export", spec, "cpu")
    checkpoint.restore(m, ckpt_dir)
    m.model.eval()
    return m, manifest


def _lora_layers(lm: torch.nn.Module) -> list[tuple[str, LoraLayer]]:
    return [(n, mod) for n, mod in lm.named_modules() if isinstance(mod, LoraLayer)]


def _full_b(layer: LoraLayer) -> torch.Tensor:
    """lora_B over the whole output: the selected fused parts' rows, zeros for the others."""
    b = layer.lora_B.detach()
    if layer.parts is None:
        return b.clone()
    full = b.new_zeros(layer.chunk * len(FUSED_PARTS), b.shape[1])
    for j, i in enumerate(layer.parts):
        full[i * layer.chunk:(i + 1) * layer.chunk] = b[j * layer.chunk:(j + 1) * layer.chunk]
    return full


def plain_lm(m, merge: bool) -> torch.nn.Module:
    """A copy of the causal LM without LoRA wrappers; with merge, each adapter's update is added
    to its base weight."""
    lm = copy.deepcopy(m.model.lm)
    for name, layer in _lora_layers(lm):
        base = layer.base_layer
        if merge:
            with torch.no_grad():
                base.weight.add_(delta_weight(base, layer.lora_A.detach(), layer.lora_B.detach(), layer.scale,
                                              layer.parts).to(base.weight))
        parent_name, _, child = name.rpartition(".")
        setattr(lm.get_submodule(parent_name) if parent_name else lm, child, base)
    for mod in lm.modules():  # the engine's instance patch (see models.EngineModel), not part of the model
        mod.__dict__.pop("warn_if_padding_and_no_attention_mask", None)
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm


def _probe_ids(m) -> torch.Tensor:
    cfg = m.model.lm.config
    n_pos = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 32
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, int(cfg.vocab_size), (3, min(16, int(n_pos))), generator=g)


def _dpalign_logits(m, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m.model(ids, want="logits")["logits"]


def _hf_logits(lm, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return lm(input_ids=ids).logits


def _readme_note(manifest: dict, qv: list[str]) -> str:
    lines = ["", "## dpalign export", "",
             f"Exported by `dpalign export` from a dpalign checkpoint (step {manifest.get('step')}, "
             f"metadata {json.dumps(manifest.get('metadata') or {}, sort_keys=True)}).", ""]
    if qv:
        lines += [f"dpalign trained LoRA on the query and value thirds of GPT-2's fused `c_attn` only ({', '.join(qv)}). "
                  "peft has no such target, so this adapter is a full-width `c_attn` LoRA whose `lora_B` rows for the "
                  "key third (rows n_embd..2*n_embd) are zero: the product B A x is the same, and so are the logits.", ""]
    if manifest.get("value_head"):
        lines += ["The PPO value head (a training-time head) is not part of this adapter.", ""]
    return "\n".join(lines)


def export(ckpt_dir: str, fmt: str, out_dir: str) -> dict:
    """Writes `out_dir` and returns a summary (also written to out_dir/dpalign_export.json)."""
    if fmt not in FORMATS:
        raise invalid_argument(f"unknown export format {fmt!r}", supported=",".join(FORMATS))
    m, manifest = load_checkpoint_model(ckpt_dir)
    if not hasattr(m.model.lm, "save_pretrained"):
        raise unsupported_model("export needs a transformers model (save_pretrained)")
    os.makedirs(out_dir, exist_ok=True)
    ids = _probe_ids(m)
    ref = _dpalign_logits(m, ids)
    lcfg: LoraConfig = m.lora
    layers = _lora_layers(m.model.lm)
    qv = sorted({t for t in lcfg.target_modules if parse_target(t)[1] is not None})
    summary: dict = {"format": fmt, "checkpoint_step": manifest.get("step"), "checkpoint_metadata": manifest.get("metadata") or {},
                     "source": manifest.get("source"), "lora": lcfg.to_json(), "value_head_dropped": bool(manifest.get("value_head"))}
    if fmt == "merged":
        lm = plain_lm(m, merge=True)
        lm.save_pretrained(out_dir, safe_serialization=True)
        m.tokenizer.save_pretrained(out_dir)
        from transformers import AutoModelForCausalLM

        back = AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True, dtype=torch.float32)
        back.eval()
        diff = float((_hf_logits(back, ids) - ref).abs().max())
    else:
        if not layers:
            raise invalid_argument("this checkpoint has no LoRA adapter (full fine-tuning or rank 0): use --format merged")
        from peft import LoraConfig as PeftLoraConfig
        from peft import PeftModel, get_peft_model

        base = plain_lm(m, merge=False)
        if manifest.get("includes_base"):
            base_dir = os.path.join(out_dir, "base")
            base.save_pretrained(base_dir, safe_serialization=True)
            m.tokenizer.save_pretrained(base_dir)
            base_ref = os.path.abspath(base_dir)
            summary["base"] = "base"
        else:
            base_ref = manifest["source"]["hf_path"]
            summary["base"] = base_ref
        targets = sorted({parse_target(t)[0] for t in lcfg.target_modules})
        conv1d = any(type(layer.base_layer).__name__ == "Conv1D" for _, layer in layers)
        pcfg = PeftLoraConfig(r=lcfg.rank, lora_alpha=lcfg.alpha or lcfg.rank, lora_dropout=lcfg.dropout,
                              target_modules=targets, fan_in_fan_out=conv1d, bias="none", task_type="CAUSAL_LM",
                              base_model_name_or_path=base_ref)
        base.config._name_or_path = base_ref  # peft records the base's own name
        base.name_or_path = base_ref
        pm = get_peft_model(copy.deepcopy(base), pcfg)
        pm.peft_config["default"].base_model_name_or_path = base_ref
        pmods = dict(pm.base_model.model.named_modules())
        for name, layer in layers:
            target = pmods.get(name)
            if target is None or not hasattr(target, "lora_A"):
                raise unsupported_model(f"peft did not wrap {name!r} as dpalign did (targets {targets})")
            with torch.no_grad():
                target.lora_A["default"].weight.copy_(layer.lora_A.detach())
                target.lora_B["default"].weight.copy_(_full_b(layer))
        if abs(pm.base_model.model.get_submodule(layers[0][0]).scaling["default"] - layers[0][1].scale) > 1e-12:
            raise unsupported_model("peft's LoRA scaling differs from dpalign's (alpha / rank)")
        pm.save_pretrained(out_dir, safe_serialization=True)
        if manifest.get("includes_base"):  # the saved base names itself too (for AutoPeftModel)
            base.config.save_pretrained(os.path.join(out_dir, "base"))
        m.tokenizer.save_pretrained(out_dir)
        with open(os.path.join(out_dir, "README.md"), "a", encoding="utf-8") as f:
            f.write(_readme_note(manifest, qv))
        back = PeftModel.from_pretrained(base, out_dir)
        back.eval()
        diff = float((_hf_logits(back, ids) - ref).abs().max())
        if qv:
            summary["fused_parts"] = ("c_attn[q,v] is written as a full-width c_attn LoRA whose lora_B rows for the key "
                                      "third are zero (same product, same logits)")
    summary["max_abs_logit_diff"] = diff
    summary["probe_shape"] = list(ids.shape)
    if not diff <= TOLERANCE:
        raise invalid_argument(f"the exported model's logits differ from dpalign's by {diff:.3g} (> {TOLERANCE}); "
                               "the export is not faithful, please report this")
    with open(os.path.join(out_dir, EXPORT_META), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dpalign_worker.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a dpalign checkpoint directory (manifest.json + weights.safetensors)")
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    try:
        summary = export(a.checkpoint, a.format, a.out)
    except WorkerError as e:
        sys.stderr.write(f"dpalign export: {e}\n")
        return 2
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
