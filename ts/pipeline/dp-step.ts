/**
 * DP bookkeeping of a training stage: the DpSpec of each step, a guard that stops the run before
 * the executed mechanism could exceed the plan (DESIGN.md rule 5), a check of what the worker
 * reports against what was asked, and the run's privacy ledger (DESIGN.md rule 4).
 *
 * The ledger (ledger.jsonl, ts/privacy's hash-chained format) is the one record of what ran: each
 * record covers sampled batches [from_batch, to_batch) of a stage with the mechanism the worker
 * reported. A record is appended and fsynced BEFORE the checkpoint that holds those batches is
 * written, so a crash can leave the ledger ahead of the checkpoint (those batches stay accounted
 * and are not run again) but never behind it. The checkpoint records the ledger line it follows.
 */
import { BudgetGuard, PrivacyLedger, type LedgerRecord } from "../privacy/index.js";
import type { DpSpec, TrainStepReply } from "../protocol/messages.js";
import { BudgetExceededError, DataError, DpalignError } from "../util/errors.js";
import type { RunPlan, StagePlan } from "./plan.js";
import type { RunDir } from "./run-dir.js";
import { RunIntegrityError } from "./run-errors.js";

export const PRIVACY_LEDGER_FILE = "ledger.jsonl";

/** How a stage's noise is drawn: from the worker's CSPRNG, or (reproducible runs) from a seed. */
export type NoiseSource = { mode: "secure" } | { mode: "seeded"; seed: bigint };

/** The run's ledger, read and verified (hash chain, complete lines); errors say how to recover. */
export function readRunLedger(run: RunDir): { records: LedgerRecord[]; hashes: string[]; ledger: PrivacyLedger } {
  const ledger = new PrivacyLedger(run.path(PRIVACY_LEDGER_FILE));
  try {
    return { records: ledger.read(), hashes: ledger.hashes(), ledger };
  } catch (e) {
    if (e instanceof DataError) {
      throw new RunIntegrityError(`${e.message}. The budget this run spent cannot be established from it: keep the directory for inspection and start again in a new --run-dir`);
    }
    throw e;
  }
}

/** Batches of `stage` the ledger accounts, checked to be contiguous from 0 and to match the plan. */
export function ledgerBatches(records: readonly LedgerRecord[], plan: StagePlan, file: string): number {
  let done = 0;
  for (const r of records.filter((x) => x.stage === plan.stage)) {
    const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
    if (r.from_batch !== done || r.to_batch === undefined || r.to_batch - r.from_batch !== r.steps) {
      throw new RunIntegrityError(`${file}: ${plan.stage} records are not contiguous (expected batches from ${done}, found [${r.from_batch}, ${r.to_batch})); the ledger was edited: start again in a new --run-dir`);
    }
    if (!close(r.q, plan.q) || !close(r.sigma, plan.sigma) || !close(r.clip, plan.maxGradNorm) || r.reuse !== plan.reuse) {
      throw new RunIntegrityError(
        `${file}: a ${plan.stage} record (q ${r.q}, sigma ${r.sigma}, C ${r.clip}, reuse ${r.reuse}) differs from the plan (q ${plan.q}, sigma ${plan.sigma}, C ${plan.maxGradNorm}, reuse ${plan.reuse}); the run directory belongs to another plan: use a new --run-dir`,
      );
    }
    done = r.to_batch;
  }
  if (done > plan.sampledBatches) {
    throw new RunIntegrityError(`${file}: the ledger accounts ${done} ${plan.stage} batches but ${plan.sampledBatches} are planned; start again in a new --run-dir`);
  }
  return done;
}

export class DpStageGuard {
  private executed = 0;
  private committed = 0;
  private noiseMode = "none";
  private readonly budget: BudgetGuard | undefined;
  private readonly ledger: PrivacyLedger;
  private readonly file: string;

  /** Mechanisms of earlier stages that compose with this one (sequential composition only). */
  private readonly earlier: { stage: string; mechanisms: { q: number; sigma: number; steps: number }[] }[] = [];

  constructor(
    readonly plan: StagePlan, run: RunDir, private readonly noise: NoiseSource,
    private readonly accountant: "prv" | "rdp" = "prv", runPlan?: RunPlan,
  ) {
    const { records, ledger } = readRunLedger(run);
    this.ledger = ledger;
    this.file = ledger.path;
    if (plan.dp) {
      this.committed = ledgerBatches(records, plan, this.file);
      this.executed = this.committed;
    }
    if (plan.dp && runPlan?.composition === "sequential") {
      // One user may be in every stage: ts/privacy's guard composes this stage with what the
      // earlier stages executed and holds the whole to the pipeline's target.
      for (const r of records.filter((x) => x.stage !== plan.stage)) {
        this.earlier.push({ stage: r.stage, mechanisms: [{ q: r.q, sigma: r.sigma / Math.sqrt(r.reuse), steps: r.steps }] });
      }
      this.budget = new BudgetGuard({ targetEpsilon: runPlan.epsilon, delta: plan.delta, composition: "sequential", accountant });
    } else {
      // D1 and D3 are disjoint: each stage is checked against the target on its own.
      this.budget = plan.dp ? new BudgetGuard({ targetEpsilon: plan.epsilonTarget, delta: plan.delta, composition: "parallel", accountant }) : undefined;
    }
  }

  /** The next sampled batch to run (the resume point). */
  get done(): number {
    return this.executed;
  }

  /** Batches the ledger accounts for this stage. */
  get accounted(): number {
    return this.committed;
  }

  dpSpec(step: number): DpSpec {
    const p = this.plan;
    if (!p.dp) return { enabled: false, noiseMultiplier: 0, maxGradNorm: p.maxGradNorm, expectedBatchSize: p.batchSize, secureNoise: false };
    const n = this.noise;
    return {
      enabled: true, noiseMultiplier: p.sigma, maxGradNorm: p.maxGradNorm, expectedBatchSize: p.q * p.datasetSize,
      secureNoise: n.mode === "secure", ...(n.mode === "seeded" ? { noiseSeed: Number(BigInt.asUintN(52, n.seed + BigInt(step))) } : {}),
    };
  }

  /** Called before `n` sampled batches run: refuses any batch beyond the planned mechanism or the budget. */
  beforeBatches(n = 1): void {
    if (this.executed + n > this.plan.sampledBatches) {
      throw new BudgetExceededError(
        `${this.plan.stage}: batch ${this.executed + n} would exceed the ${this.plan.sampledBatches} sampled batches calibrated for epsilon ${this.plan.epsilonTarget}; the run stops here`,
      );
    }
    this.budget?.beforeStep(this.earlier, this.plan.stage, { q: this.plan.q, sigma: this.plan.sigmaEffective }, this.executed + n - 1);
  }

  beforeBatch(): void {
    this.beforeBatches(1);
  }

  /** Checks a step's report against the plan. */
  checkReply(r: TrainStepReply, examples: number): void {
    const p = this.plan;
    if (r.examples !== examples) throw new DpalignError("MECHANISM_MISMATCH", `${p.stage}: the worker trained on a different number of examples than were sampled; the run stops`);
    if (!p.dp) return;
    const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
    if (!r.dp || !close(r.noiseMultiplier, p.sigma) || !close(r.maxGradNorm, p.maxGradNorm)) {
      throw new BudgetExceededError(
        `${p.stage}: the worker ran (dp ${r.dp}, sigma ${r.noiseMultiplier}, C ${r.maxGradNorm}) but the plan is (sigma ${p.sigma}, C ${p.maxGradNorm}); the run stops`,
      );
    }
    if (r.noiseMode !== this.noise.mode) {
      throw new DpalignError("MECHANISM_MISMATCH", `${p.stage}: the worker reports noise mode ${r.noiseMode}, ${this.noise.mode} was asked; the run stops`);
    }
    this.noiseMode = r.noiseMode;
  }

  afterBatches(n = 1): void {
    this.executed += n;
  }

  afterBatch(): void {
    this.afterBatches(1);
  }

  /**
   * On resume, with the stage's checkpoint holding `inCheckpoint` batches and recording the ledger
   * line `ledgerHead` it follows. The ledger may be ahead (a crash between a record and its
   * checkpoint: those batches ran and stay accounted, the stage goes on after them); behind, or
   * not containing the recorded line, it was cut or rewritten and the run is refused.
   */
  verifyCheckpoint(inCheckpoint: number, ledgerHead: string | undefined, hashes: readonly string[]): void {
    if (!this.plan.dp) {
      this.executed = this.committed = inCheckpoint;
      return;
    }
    if (inCheckpoint > this.committed) {
      throw new RunIntegrityError(
        `${this.file}: the ${this.plan.stage} checkpoint holds ${inCheckpoint} batches but the ledger accounts only ${this.committed}: batches ran that the ledger does not show (was its last line removed?). The run's epsilon cannot be established; start again in a new --run-dir`,
      );
    }
    if (inCheckpoint > 0 && (!ledgerHead || !hashes.includes(ledgerHead))) {
      throw new RunIntegrityError(`${this.file}: the line the ${this.plan.stage} checkpoint was written after is not in the ledger (the ledger was replaced or edited); start again in a new --run-dir`);
    }
  }

  /**
   * Appends and fsyncs the ledger record for the batches executed since the last one; call it
   * BEFORE saving the checkpoint that holds them. Returns the ledger head for the checkpoint.
   */
  record(): string {
    const p = this.plan;
    if (!p.dp) {
      this.committed = this.executed;
      return "";
    }
    if (this.executed > this.committed) {
      if (this.noiseMode !== "none" && this.noiseMode !== this.noise.mode) {
        throw new DpalignError("MECHANISM_MISMATCH", `${p.stage}: the worker reports noise mode ${this.noiseMode}, ${this.noise.mode} was asked`);
      }
      this.ledger.append({
        stage: p.stage, q: p.q, sigma: p.sigma, clip: p.maxGradNorm, steps: this.executed - this.committed, reuse: p.reuse,
        accountant: this.accountant, noise: this.noise.mode, from_batch: this.committed, to_batch: this.executed,
      });
      this.committed = this.executed;
    }
    return this.ledger.head();
  }
}
