/**
 * The final privacy report, recomputed from the ledger (what ran), per stage and composed.
 * Disjoint D1 and D3 compose in parallel (the pipeline's epsilon is the largest stage epsilon at
 * the common delta, PAPER.md); with one user in both stages the executed mechanisms are composed
 * sequentially (DESIGN.md rule 4).
 */
import { existsSync } from "node:fs";
import { PrivacyLedger } from "../privacy/index.js";
import { BudgetExceededError } from "../util/errors.js";
import type { LedgerRecord } from "../privacy/index.js";
import { stagesOf, type Calibrator, type RunPlan } from "./plan.js";

export interface StagePrivacy {
  stage: string;
  dp: boolean;
  q: number;
  sigma: number;
  sigmaAccounted: number;
  maxGradNorm: number;
  reuse: number;
  batchesExecuted: number;
  batchesPlanned: number;
  epsilon: number;
  delta: number;
  noiseMode: string;
}

export interface PrivacyReport {
  /** False for non-private runs and for reproducible runs (their samples and noise follow the public seed). */
  differentiallyPrivate: boolean;
  /** Why the run is not private, when it is not; the first line of every report. */
  notPrivateReason?: string;
  accountant: string;
  target: { epsilon: number; delta: number };
  stages: StagePrivacy[];
  /** The guarantee claimed: infinite epsilon unless the run is differentially private. */
  composed: { epsilon: number; delta: number; rule: string; mechanismEpsilon: number };
  /** The same guarantee recomputed by ts/privacy from the run's PrivacyLedger. */
  ledgerCheck?: { epsilon: number; perStage: { stage: string; epsilon: number }[] };
}

export function privacyReport(plan: RunPlan, ledger: readonly LedgerRecord[], cal: Calibrator, privacyLedgerPath?: string): PrivacyReport {
  const stages: StagePrivacy[] = [];
  for (const sp of stagesOf(plan)) {
    const entries = ledger.filter((e) => e.stage === sp.stage);
    // Non-private stages are not in the ledger; they ran their plan.
    const batches = sp.dp ? entries.reduce((a, e) => a + e.steps, 0) : sp.sampledBatches;
    const eps = !sp.dp ? Infinity : batches === 0 ? 0 : cal.epsilon({ q: sp.q, steps: batches, sigma: sp.sigmaEffective, delta: plan.delta, accountant: plan.accountant });
    if (sp.dp && eps > sp.epsilonTarget * (1 + 1e-6)) {
      throw new BudgetExceededError(`${sp.stage}: executed mechanism has epsilon ${eps} > target ${sp.epsilonTarget}`);
    }
    stages.push({
      stage: sp.stage, dp: sp.dp, q: sp.q, sigma: sp.sigma, sigmaAccounted: sp.sigmaEffective, maxGradNorm: sp.maxGradNorm, reuse: sp.reuse,
      batchesExecuted: batches, batchesPlanned: sp.sampledBatches, epsilon: eps, delta: plan.delta,
      noiseMode: entries.at(-1)?.noise ?? (sp.dp ? "-" : "none"),
    });
  }
  let ledgerCheck: PrivacyReport["ledgerCheck"];
  if (plan.dp && privacyLedgerPath && existsSync(privacyLedgerPath)) {
    const c = new PrivacyLedger(privacyLedgerPath).compose(plan.composition, plan.delta, plan.accountant);
    ledgerCheck = { epsilon: c.epsilon, perStage: c.perStage.map((s) => ({ stage: s.stage, epsilon: s.epsilon })) };
    if (c.epsilon > plan.epsilon * (1 + 1e-6)) throw new BudgetExceededError(`the privacy ledger composes to epsilon ${c.epsilon} > target ${plan.epsilon}`);
  }
  const mechanismEpsilon = composedEpsilon(plan, stages, cal);
  const seeded = stages.some((st) => st.dp && st.noiseMode === "seeded");
  const notPrivateReason = !plan.dp
    ? "non-private run (epsilon = inf)"
    : plan.reproducible || seeded
      ? "privacy.reproducible: the samples, the stage split and the noise follow the public seed, so this run is NOT differentially private (epsilon inf); the figures below are those of the calibrated mechanism had its randomness been secret"
      : undefined;
  return {
    differentiallyPrivate: !notPrivateReason,
    ...(notPrivateReason ? { notPrivateReason } : {}),
    ledgerCheck,
    accountant: plan.accountant,
    target: { epsilon: plan.epsilon, delta: plan.delta },
    stages,
    composed: { epsilon: notPrivateReason ? Infinity : mechanismEpsilon, delta: plan.delta, rule: plan.composed.rule, mechanismEpsilon },
  };
}

function composedEpsilon(plan: RunPlan, stages: readonly StagePrivacy[], cal: Calibrator): number {
  if (!plan.dp || plan.composition === "parallel") return Math.max(...stages.map((s) => s.epsilon));
  return cal.composeSequential({
    stages: stages.map((s) => ({ q: s.q, steps: s.batchesExecuted, sigma: s.sigmaAccounted })), delta: plan.delta, accountant: plan.accountant,
  });
}
