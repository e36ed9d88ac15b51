/**
 * The privacy ledger: an append-only JSON-lines file with one record per executed mechanism
 * (written from what the worker reports), and the budget guard that refuses a plan over its
 * target and stops a run before a step would take it over.
 */
import { createHash } from "node:crypto";
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from "node:fs";
import { z } from "zod";
import { BudgetExceededError, DataError } from "../util/errors.js";
import type { AccountantOptions } from "./accountants/index.js";
import { type Composed, compose } from "./compose.js";
import { type CompositionMode, type PrivacyPlan, stageMechanism } from "./plan.js";
import { ACCOUNTANT_NAMES, type AccountantName, type Mechanism, resolveAccountant, validateDelta, validateEpsilon, validateMechanism } from "./types.js";

/** One executed mechanism as the ledger records it: public parameters only (no batch sizes, no ids). */
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
    accountant: z.enum(ACCOUNTANT_NAMES),
    /** How the noise was drawn: from a CSPRNG ("secure") or from a recorded seed ("seeded": not private). */
    noise: z.enum(["secure", "seeded"]),
    /** The sampled batches [from_batch, to_batch) of the stage that this record covers (a run's ledger). */
    from_batch: z.number().int().nonnegative().optional(),
    to_batch: z.number().int().nonnegative().optional(),
    /** SHA-256 of the previous line ("" for the first): a removed, edited or reordered line breaks the chain. */
    prev: z.string().optional(),
  })
  .strict();
export type LedgerRecord = z.infer<typeof ledgerRecordSchema>;
/** A record to append; `time` defaults to now, `reuse` to 1, and `prev` is filled in by the ledger. */
export type LedgerEntry = Omit<LedgerRecord, "time" | "reuse" | "prev"> & { time?: string; reuse?: number };

const lineHash = (line: string) => createHash("sha256").update(line).digest("hex");

/** Append-only JSON-lines ledger of executed mechanisms, hash-chained and fsynced line by line. */
export class PrivacyLedger {
  constructor(readonly path: string) {}

  /** Validates and appends one record (one line, durable when this returns); never rewrites earlier lines. */
  append(entry: LedgerEntry): LedgerRecord {
    const lines = this.lines();
    const prev = lines.length ? lineHash(lines[lines.length - 1].text) : "";
    const rec = ledgerRecordSchema.parse({ ...entry, time: entry.time ?? new Date().toISOString(), prev });
    const fd = openSync(this.path, "a");
    try {
      writeSync(fd, JSON.stringify(rec) + "\n");
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return rec;
  }

  /** The non-empty lines with their line numbers; a last line without its newline is an interrupted write. */
  private lines(): { text: string; line: number }[] {
    if (!existsSync(this.path)) return [];
    const raw = readFileSync(this.path, "utf8");
    if (raw.length > 0 && !raw.endsWith("\n")) {
      const n = raw.split("\n").length;
      throw new DataError(`${this.path}:${n}: the last line is incomplete (a write was interrupted or the file was cut); the ledger cannot be trusted`);
    }
    return raw.split("\n").map((text, i) => ({ text, line: i + 1 })).filter((l) => l.text.trim() !== "");
  }

  /** Every record, in order. A malformed line, or a broken hash chain, is a DataError naming file and line. */
  read(): LedgerRecord[] {
    const out: LedgerRecord[] = [];
    let prevText: string | undefined;
    for (const { text, line } of this.lines()) {
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        throw new DataError(`${this.path}:${line}: not a JSON object`);
      }
      const r = ledgerRecordSchema.safeParse(raw);
      if (!r.success) throw new DataError(`${this.path}:${line}: ${r.error.issues.map((x) => `${x.path.join(".")}: ${x.message}`).join("; ")}`);
      if (r.data.prev !== undefined && r.data.prev !== (prevText === undefined ? "" : lineHash(prevText))) {
        throw new DataError(`${this.path}:${line}: the hash chain is broken (a line before it was removed, edited or reordered); the ledger cannot be trusted`);
      }
      out.push(r.data);
      prevText = text;
    }
    return out;
  }

  /** SHA-256 of the last line ("" when empty): what a checkpoint records to bind itself to the ledger. */
  head(): string {
    const lines = this.lines();
    return lines.length ? lineHash(lines[lines.length - 1].text) : "";
  }

  /** SHA-256 of every line, in order. */
  hashes(): string[] {
    return this.lines().map((l) => lineHash(l.text));
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
