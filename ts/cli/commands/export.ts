/**
 * `dpalign export RUN [--stage aligned|sft] --format peft|merged --out DIR`: a run's LoRA
 * checkpoint in Hugging Face formats. Only the released checkpoint is read
 * (`checkpoints/ppo/last` for the aligned policy, `checkpoints/sft/last` for the SFT model), never
 * `private/`. The tensor work is a small Python entry point beside the worker
 * (`python -m dpalign_worker.export`, see py_runtime/dpalign_worker/export.py): a one-off
 * file-to-file job with no decision of the control plane in it needs neither the protocol nor a
 * worker session, and the tensors never leave Python.
 */
import type { Argv } from "yargs";
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { DpalignError, InvalidArgumentError } from "../../util/errors.js";
import { ensurePythonEnv, projectRoot, resolvePython } from "../../util/python.js";

export const EXPORT_STAGES = { aligned: "ppo", sft: "sft" } as const;
export type ExportStage = keyof typeof EXPORT_STAGES;

/** The checkpoint directory of a run's stage, after checking that it holds a checkpoint. */
export function exportCheckpoint(runDir: string, stage: ExportStage): string {
  const dir = resolve(runDir);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new InvalidArgumentError("RUN", `${runDir} is not a run directory`);
  const rel = join("checkpoints", EXPORT_STAGES[stage], "last");
  const ckpt = join(dir, rel);
  if (!existsSync(join(ckpt, "manifest.json"))) {
    const what = stage === "aligned" ? "the aligned policy (DP-PPO)" : "the SFT model";
    throw new DpalignError("CHECKPOINT_MISSING", `${runDir} has no checkpoint of ${what} (${rel}/manifest.json): run or resume the pipeline until that stage has finished${stage === "aligned" ? ", or export the SFT model with --stage sft" : ""}`);
  }
  return ckpt;
}

export function register(cli: Argv): Argv {
  return cli.command(
    "export <run>",
    "Export a run's LoRA checkpoint for Hugging Face: a peft adapter directory, or a merged save_pretrained model",
    (y) =>
      y
        .positional("run", { type: "string", demandOption: true, describe: "run directory (runs/<name>-eps<eps>-seed<seed>)" })
        .option("stage", { choices: ["aligned", "sft"] as const, default: "aligned" as const, describe: "which model: the aligned policy (checkpoints/ppo/last) or the SFT model (checkpoints/sft/last)" })
        .option("format", { choices: ["peft", "merged"] as const, demandOption: true, describe: "peft: adapter_config.json + adapter_model.safetensors (+ base/ when the base is not a Hugging Face model); merged: a full save_pretrained model" })
        .option("out", { type: "string", demandOption: true, describe: "output directory" }),
    async (args) => {
      const ckpt = exportCheckpoint(args.run as string, args.stage as ExportStage);
      ensurePythonEnv();
      const python = resolvePython();
      const r = spawnSync(python, ["-m", "dpalign_worker.export", "--checkpoint", ckpt, "--format", args.format as string, "--out", resolve(args.out as string)], {
        encoding: "utf8", stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, PYTHONPATH: [join(projectRoot, "py_runtime"), process.env.PYTHONPATH].filter(Boolean).join(":"), PYTHONUNBUFFERED: "1" },
      });
      if (r.error) throw new DpalignError("EXPORT_FAILED", `cannot run ${python}: ${r.error.message}; run \`npm run setup:python\` or set DPALIGN_PYTHON`);
      if (r.status !== 0) {
        const msg = (r.stderr ?? "").split("\n").filter((l) => l.startsWith("dpalign export: ")).pop()?.slice("dpalign export: ".length);
        throw new DpalignError("EXPORT_FAILED", msg ?? `the export process failed (exit ${r.status}):\n${(r.stderr ?? "").trim().split("\n").slice(-8).join("\n")}`);
      }
      const s = JSON.parse((r.stdout ?? "").trim().split("\n").pop() ?? "{}") as { max_abs_logit_diff?: number; base?: string; fused_parts?: string };
      const out = resolve(args.out as string);
      process.stdout.write(`${args.format} export of ${args.stage === "sft" ? "the SFT model" : "the aligned policy"} written to ${out}\n`);
      if (args.format === "peft") {
        process.stdout.write(`  load: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(${JSON.stringify(s.base === "base" ? join(out, "base") : s.base)}), ${JSON.stringify(out)})\n`);
        if (s.fused_parts) process.stdout.write(`  note: ${s.fused_parts}\n`);
      } else {
        process.stdout.write(`  load: AutoModelForCausalLM.from_pretrained(${JSON.stringify(out)})\n`);
      }
      process.stdout.write(`  checked: logits match dpalign's forward (max abs difference ${s.max_abs_logit_diff?.toExponential(2)})\n`);
    },
  );
}
