/**
 * Privacy plans: the stages a run will execute, as the budget guard and the CLI read them. A
 * plan file is JSON or YAML; fields use the library's names (q, sigma, steps) or Opacus's
 * (sample_rate, noise_multiplier).
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ConfigError } from "../util/errors.js";
import { ACCOUNTANT_NAMES, type AccountantName, type Mechanism } from "./types.js";

/** One DP stage of a plan (DP-SFT, DP reward model, DP-PPO). */
export interface StagePlan {
  /** Stage name, e.g. "sft", "reward", "ppo". */
  readonly stage: string;
  readonly q: number;
  /** Noise multiplier; absent when the plan asks for calibration. */
  readonly sigma?: number;
  readonly steps: number;
  /** Noisy steps per sampled batch (T_PPO = K); accounted as sigma / sqrt(K). Default 1. */
  readonly reuse?: number;
  /** Clipping norm C (recorded, not used by the accounting). */
  readonly clip?: number;
}

/** How stages compose: disjoint data (parallel, the paper's setting) or one user in all (sequential). */
export type CompositionMode = "parallel" | "sequential";

/** A run's privacy plan: its target and its stages. */
export interface PrivacyPlan {
  readonly targetEpsilon: number;
  readonly delta: number;
  readonly composition: CompositionMode;
  readonly accountant?: AccountantName;
  readonly stages: readonly StagePlan[];
}

const positiveInt = z.number().int().nonnegative();
const stageSchema = z
  .object({
    stage: z.string().min(1),
    q: z.number().gt(0).lte(1).optional(),
    sample_rate: z.number().gt(0).lte(1).optional(),
    sigma: z.number().positive().optional(),
    noise_multiplier: z.number().positive().optional(),
    steps: positiveInt,
    reuse: z.number().int().positive().optional(),
    clip: z.number().positive().optional(),
  })
  .strict()
  .transform((s, ctx) => {
    const q = s.q ?? s.sample_rate;
    if (q === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, message: "needs q (or sample_rate)" });
    return { stage: s.stage, q: q ?? 1, sigma: s.sigma ?? s.noise_multiplier, steps: s.steps, reuse: s.reuse, clip: s.clip };
  });

/** The zod schema of a plan file. */
export const planSchema = z
  .object({
    target_epsilon: z.number().positive(),
    delta: z.number().gt(0).lt(1),
    composition: z.enum(["parallel", "sequential"]).default("parallel"),
    accountant: z.enum(ACCOUNTANT_NAMES).optional(),
    stages: z.array(stageSchema).min(1),
  })
  .strict()
  .transform((p): PrivacyPlan => ({ targetEpsilon: p.target_epsilon, delta: p.delta, composition: p.composition, accountant: p.accountant, stages: p.stages }));

/** Parses and validates a plan object; errors name the field. */
export function parsePlan(raw: unknown, source = "plan"): PrivacyPlan {
  const r = planSchema.safeParse(raw);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new ConfigError(`${source}: ${issues}`);
  }
  return r.data;
}

/** Reads a plan file (JSON or YAML). */
export function readPlanFile(path: string): PrivacyPlan {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`${path}: cannot read the plan file (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = path.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid ${path.endsWith(".json") ? "JSON" : "YAML"} (${(e as Error).message})`);
  }
  return parsePlan(raw, path);
}

/** The mechanism a stage accounts as: K-fold reuse of a sample is one step with sigma / sqrt(K). */
export function stageMechanism(s: StagePlan): Mechanism {
  if (s.sigma === undefined) throw new ConfigError(`stage ${s.stage}: no noise multiplier (calibrate the plan first)`);
  const k = s.reuse ?? 1;
  return { q: s.q, sigma: s.sigma / Math.sqrt(k), steps: s.steps };
}
