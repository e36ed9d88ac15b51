/**
 * DP bookkeeping shared by the DP stages: the DpSpec of a planned stage, a guard that stops the
 * run before the executed mechanism could exceed the plan (DESIGN.md rule 5), a check of what
 * the worker reports against what was asked, and the ledger entries (DESIGN.md rule 4) written
 * at each checkpoint for the batches executed since the previous one.
 */
import { BudgetGuard, PrivacyLedger } from "../privacy/index.js";
import type { DpSpec, TrainStepReply } from "../transport/messages.js";
import { BudgetExceededError, DpalignError } from "../util/errors.js";
import type { RunPlan, StagePlan } from "./plan.js";
import type { RunDir } from "./run-dir.js";

/** Progress record of a stage (batches.jsonl): which sampled batches ran and were kept. */
export interface LedgerEntry {
  stage: string;
  mechanism: "sampled_gaussian" | "non_private";
  /** Poisson rate, noise multiplier per noisy step, accounted noise multiplier, clip norm. */
  q: number;
  sigma: number;
  sigmaAccounted: number;
  maxGradNorm: number;
  /** T_PPO: noisy steps per sampled batch. */
  reuse: number;
  /** Sampled batches [fromBatch, toBatch) executed and kept. */
  fromBatch: number;
  toBatch: number;
  datasetSize: number;
  noiseMode: string;
  noiseSeed?: string;
  time: string;
}

/** The run's privacy ledger (ts/privacy's PrivacyLedger format) and the stage progress record. */
export const PRIVACY_LEDGER_FILE = "ledger.jsonl";
export const BATCHES_FILE = "batches.jsonl";

export class DpStageGuard {
  private executed: number;
  private committed: number;
  private noiseMode = "none";
  private readonly budget: BudgetGuard | undefined;
  private readonly ledger: PrivacyLedger;

  /** Mechanisms of earlier stages that compose with this one (sequential composition only). */
  private readonly earlier: { stage: string; mechanisms: { q: number; sigma: number; steps: number }[] }[] = [];

  constructor(
    readonly plan: StagePlan, private readonly run: RunDir, private readonly secureNoise: boolean, private readonly noiseSeed: bigint,
    private readonly accountant: "prv" | "rdp" = "prv", runPlan?: RunPlan,
  ) {
    const all = run.readJsonl<LedgerEntry>(BATCHES_FILE);
    const prior = all.filter((e) => e.stage === plan.stage);
    if (plan.dp && runPlan?.composition === "sequential") {
      // One user may be in every stage: ts/privacy's guard composes this stage with what the
      // earlier stages executed and holds the whole to the pipeline's target.
      for (const e of all.filter((x) => x.stage !== plan.stage && x.mechanism === "sampled_gaussian")) {
        this.earlier.push({ stage: e.stage, mechanisms: [{ q: e.q, sigma: e.sigmaAccounted, steps: e.toBatch - e.fromBatch }] });
      }
      this.budget = new BudgetGuard({ targetEpsilon: runPlan.epsilon, delta: plan.delta, composition: "sequential", accountant });
    } else {
      // D1 and D3 are disjoint: each stage is checked against the target on its own.
      this.budget = plan.dp ? new BudgetGuard({ targetEpsilon: plan.epsilonTarget, delta: plan.delta, composition: "parallel", accountant }) : undefined;
    }
    this.ledger = new PrivacyLedger(run.path(PRIVACY_LEDGER_FILE));
    this.committed = prior.reduce((m, e) => Math.max(m, e.toBatch), 0);
    this.executed = this.committed;
  }

  /** Sampled batches already executed and kept (the resume point). */
  get done(): number {
    return this.executed;
  }

  dpSpec(step: number): DpSpec {
    const p = this.plan;
    if (!p.dp) return { enabled: false, noiseMultiplier: 0, maxGradNorm: p.maxGradNorm, expectedBatchSize: p.batchSize, secureNoise: false };
    return {
      enabled: true, noiseMultiplier: p.sigma, maxGradNorm: p.maxGradNorm, expectedBatchSize: p.q * p.datasetSize,
      secureNoise: this.secureNoise, ...(this.secureNoise ? {} : { noiseSeed: Number(BigInt.asUintN(52, this.noiseSeed + BigInt(step))) }),
    };
  }

  /** Called before a sampled batch runs: refuses any batch beyond the planned mechanism. */
  beforeBatch(): void {
    if (this.executed + 1 > this.plan.sampledBatches) {
      throw new BudgetExceededError(
        `${this.plan.stage}: batch ${this.executed + 1} would exceed the ${this.plan.sampledBatches} sampled batches calibrated for epsilon ${this.plan.epsilonTarget}; the run stops here`,
      );
    }
    this.budget?.beforeStep(this.earlier, this.plan.stage, { q: this.plan.q, sigma: this.plan.sigmaEffective }, this.executed);
  }

  /** Checks a step's report against the plan. */
  checkReply(r: TrainStepReply, examples: number): void {
    const p = this.plan;
    if (r.examples !== examples) throw new DpalignError("MECHANISM_MISMATCH", `${p.stage}: the worker trained on ${r.examples} examples, ${examples} were sampled`);
    if (!p.dp) return;
    const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
    if (!r.dp || !close(r.noiseMultiplier, p.sigma) || !close(r.maxGradNorm, p.maxGradNorm)) {
      throw new BudgetExceededError(
        `${p.stage}: the worker ran (dp ${r.dp}, sigma ${r.noiseMultiplier}, C ${r.maxGradNorm}) but the plan is (sigma ${p.sigma}, C ${p.maxGradNorm}); the run stops`,
      );
    }
    this.noiseMode = r.noiseMode;
  }

  afterBatch(): void {
    this.executed++;
  }

  /**
   * On resume: `inCheckpoint` batches are in the checkpoint being restored. A process stopped
   * between writing a checkpoint and its ledger entry leaves more batches in the model than in the
   * ledger; they ran, so they are accounted now. Fewer cannot happen (the ledger follows the checkpoint).
   */
  reconcile(inCheckpoint: number): void {
    if (inCheckpoint < this.committed) {
      throw new DpalignError("RESUME_MISMATCH", `${this.plan.stage}: the ledger records ${this.committed} batches but the checkpoint holds ${inCheckpoint}; delete the run directory and start again`);
    }
    this.executed = inCheckpoint;
    this.commit();
  }

  /** Appends the ledger entry for the batches executed since the last commit (call after a checkpoint). */
  commit(): void {
    if (this.executed === this.committed) return;
    const p = this.plan;
    const entry: LedgerEntry = {
      stage: p.stage, mechanism: p.dp ? "sampled_gaussian" : "non_private", q: p.q, sigma: p.sigma, sigmaAccounted: p.sigmaEffective,
      maxGradNorm: p.maxGradNorm, reuse: p.reuse, fromBatch: this.committed, toBatch: this.executed, datasetSize: p.datasetSize,
      noiseMode: p.dp ? (this.secureNoise ? "secure" : "seeded") : "none", time: new Date().toISOString(),
    };
    if (p.dp && !this.secureNoise) entry.noiseSeed = this.noiseSeed.toString();
    if (p.dp && this.noiseMode !== "none" && this.noiseMode !== entry.noiseMode) {
      throw new DpalignError("MECHANISM_MISMATCH", `${p.stage}: the worker reports noise mode ${this.noiseMode}, ${entry.noiseMode} was asked`);
    }
    this.run.appendJsonl(BATCHES_FILE, entry);
    if (p.dp) {
      this.ledger.append({
        stage: p.stage, q: p.q, sigma: p.sigma, clip: p.maxGradNorm, steps: this.executed - this.committed, reuse: p.reuse,
        accountant: this.accountant, seed_mode: this.secureNoise ? "secure" : "fixed",
      });
    }
    this.committed = this.executed;
  }
}
