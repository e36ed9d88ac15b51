/**
 * The privacy ledger: an append-only JSON-lines file with one record per executed mechanism
 * (written from what the worker reports), and the budget guard that refuses a plan over its
 * target and stops a run before a step would take it over.
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { z } from "zod";
import { BudgetExceededError, DataError } from "../util/errors.js";
import type { AccountantOptions } from "./accountants/index.js";
import { type Composed, compose } from "./compose.js";
import { type CompositionMode, type PrivacyPlan, stageMechanism } from "./plan.js";
import { ACCOUNTANT_NAMES, type AccountantName, type Mechanism, resolveAccountant, validateDelta, validateEpsilon, validateMechanism } from "./types.js";

/** One executed mechanism as the ledger records it. */
export const ledgerRecordSchema = z
  .object({
    time: z.string(),
    stage: z.string().min(1),
    q: z.number().gt(0).lte(1),
    sigma: z.number().positive(),
    clip: z.number().positive(),
    steps: z.number().int().nonnegative(),
    /** Noisy steps per sampled batch (T_PPO); the accounted sigma is sigma / sqrt(reuse). */
    reuse: z.number().int().positive().default(1),
    batch_size: z.object({ mean: z.number(), min: z.number(), max: z.number(), empty: z.number().int().nonnegative() }).optional(),
    accountant: z.enum(ACCOUNTANT_NAMES),
    seed_mode: z.enum(["secure", "fixed"]),
  })
  .strict();
export type LedgerRecord = z.infer<typeof ledgerRecordSchema>;
/** A record to append; `time` defaults to now and `reuse` to 1. */
export type LedgerEntry = Omit<LedgerRecord, "time" | "reuse"> & { time?: string; reuse?: number };

/** Append-only JSON-lines ledger of executed mechanisms. */
export class PrivacyLedger {
  constructor(readonly path: string) {}

  /** Validates and appends one record (one line); never rewrites earlier lines. */
  append(entry: LedgerEntry): LedgerRecord {
    const rec = ledgerRecordSchema.parse({ ...entry, time: entry.time ?? new Date().toISOString() });
    appendFileSync(this.path, JSON.stringify(rec) + "\n", { encoding: "utf8", flag: "a" });
    return rec;
  }

  /** Every record, in order; a malformed line is a DataError naming file and line. */
  read(): LedgerRecord[] {
    if (!existsSync(this.path)) return [];
    const lines = readFileSync(this.path, "utf8").split("\n");
    const out: LedgerRecord[] = [];
    lines.forEach((line, i) => {
      if (line.trim() === "") return;
      let raw: unknown;
      try {
        raw = JSON.parse(line);
      } catch {
        throw new DataError(`${this.path}:${i + 1}: not a JSON object`);
      }
      const r = ledgerRecordSchema.safeParse(raw);
      if (!r.success) throw new DataError(`${this.path}:${i + 1}: ${r.error.issues.map((x) => `${x.path.join(".")}: ${x.message}`).join("; ")}`);
      out.push(r.data);
    });
    return out;
  }

  /** Per stage: total steps and the accounted mechanisms (reuse folded into sigma). */
  totals(): { stage: string; steps: number; mechanisms: Mechanism[] }[] {
    const byStage = new Map<string, { stage: string; steps: number; mechanisms: Mechanism[] }>();
    for (const r of this.read()) {
      const s = byStage.get(r.stage) ?? { stage: r.stage, steps: 0, mechanisms: [] };
      s.steps += r.steps;
      s.mechanisms.push({ q: r.q, sigma: r.sigma / Math.sqrt(r.reuse), steps: r.steps });
      byStage.set(r.stage, s);
    }
    return [...byStage.values()];
  }

  /** The composed guarantee of everything recorded. */
  compose(mode: CompositionMode, delta: number, accountant?: AccountantName | string): Composed {
    return compose(mode, this.totals(), delta, accountant);
  }
}

/** Settings of a budget guard. */
export interface BudgetGuardOptions {
  readonly targetEpsilon: number;
  readonly delta: number;
  readonly composition: CompositionMode;
  readonly accountant?: AccountantName | string;
  readonly options?: AccountantOptions;
}

/** Refuses plans over budget and stops runs before a step would exceed it. */
export class BudgetGuard {
  readonly accountant: AccountantName;
  private readonly allowance = new Map<string, number>();

  constructor(readonly opts: BudgetGuardOptions) {
    validateEpsilon(opts.targetEpsilon);
    validateDelta(opts.delta);
    this.accountant = resolveAccountant(opts.accountant);
  }

  /** The guarantee of stages' executed (or planned) mechanisms. */
  epsilonOf(stages: readonly { stage: string; mechanisms: readonly Mechanism[] }[]): Composed {
    return compose(this.opts.composition, stages, this.opts.delta, this.accountant, this.opts.options);
  }

  /** Throws BudgetExceededError when the plan's epsilon exceeds the target; returns it otherwise. */
  checkPlan(plan: PrivacyPlan): Composed {
    const r = this.epsilonOf(plan.stages.map((s) => ({ stage: s.stage, mechanisms: [stageMechanism(s)] })));
    if (r.epsilon > this.opts.targetEpsilon) {
      const worst = r.perStage.map((s) => `${s.stage}: ${s.epsilon.toFixed(4)}`).join(", ");
      throw new BudgetExceededError(
        `the plan's epsilon ${r.epsilon.toFixed(4)} (${this.opts.composition}; ${worst}) exceeds the target ${this.opts.targetEpsilon} at delta ${this.opts.delta}; raise the noise multiplier (dpalign privacy calibrate) or plan fewer steps`,
      );
    }
    return r;
  }

  /** True when the stages' mechanisms stay within the target. */
  canRun(stages: readonly { stage: string; mechanisms: readonly Mechanism[] }[]): boolean {
    return this.epsilonOf(stages).epsilon <= this.opts.targetEpsilon;
  }

  /**
   * The most steps of `next` (in stage `stage`) that may run after `executed` within the target,
   * by binary search over steps; cached, so calling it per step is cheap.
   */
  maxSteps(executed: readonly { stage: string; mechanisms: readonly Mechanism[] }[], stage: string, next: { q: number; sigma: number }): number {
    const key = JSON.stringify([executed, stage, next.q, next.sigma]);
    const cached = this.allowance.get(key);
    if (cached !== undefined) return cached;
    validateMechanism({ ...next, steps: 1 });
    const withSteps = (t: number) => {
      const stages = executed.map((s) => ({ stage: s.stage, mechanisms: [...s.mechanisms] }));
      const own = stages.find((s) => s.stage === stage);
      if (own) own.mechanisms.push({ ...next, steps: t });
      else stages.push({ stage, mechanisms: [{ ...next, steps: t }] });
      return stages;
    };
    let lo = 0;
    if (!this.canRun(withSteps(0))) return 0;
    let hi = 1;
    while (this.canRun(withSteps(hi))) {
      lo = hi;
      hi *= 2;
      if (hi > 1e9) return Infinity;
    }
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (this.canRun(withSteps(mid))) lo = mid;
      else hi = mid;
    }
    this.allowance.set(key, lo);
    return lo;
  }

  /**
   * Call before each noisy step: `done` steps of `next` have already run in `stage` after
   * `executed`; throws BudgetExceededError when one more step would exceed the target.
   */
  beforeStep(executed: readonly { stage: string; mechanisms: readonly Mechanism[] }[], stage: string, next: { q: number; sigma: number }, done: number): void {
    const max = this.maxSteps(executed, stage, next);
    if (done + 1 > max) {
      throw new BudgetExceededError(
        `stage ${stage}: step ${done + 1} would exceed epsilon ${this.opts.targetEpsilon} at delta ${this.opts.delta} (at most ${max} steps with sigma ${next.sigma}, q ${next.q} fit the budget); the run stops here`,
      );
    }
  }
}
