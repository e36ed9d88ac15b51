/**
 * Composition across stages. Parallel: stages on disjoint data (D1/D2/D3), the guarantee is the
 * worst stage's. Sequential: one user may be in every stage, all mechanisms compose
 * numerically. Reuse: a sub-sample used in K noisy steps (T_PPO = K) is one sampled Gaussian with
 * sigma / sqrt(K). And the budget split: calibrate every stage's sigma for a total target.
 */
import { InvalidArgumentError } from "../util/errors.js";
import type { AccountantOptions } from "./accountants/index.js";
import { calibrateSigma } from "./calibrate.js";
import { epsilon } from "./epsilon.js";
import { type CompositionMode, type StagePlan, stageMechanism } from "./plan.js";
import { type AccountantName, type EpsilonResult, LIMITS, type Mechanism, validateDelta, validateEpsilon, validateReuse } from "./types.js";

/** A stage's mechanisms, named. */
export interface StageMechanisms {
  readonly stage: string;
  readonly mechanisms: readonly Mechanism[];
}

/** A composed guarantee with every stage's own figure. */
export interface Composed extends EpsilonResult {
  readonly perStage: readonly { stage: string; epsilon: number; error: number }[];
}

/**
 * Effective noise multiplier of K noisy steps on one Poisson sample: sigma / sqrt(K). K is an
 * integer in [1, LIMITS.reuseMax]; the result is what the accountant sees, so it must not fall
 * below LIMITS.sigmaMin.
 */
export function reuseMechanism(sigma: number, k: number): number {
  validateReuse(k);
  const effective = sigma / Math.sqrt(k);
  if (effective < LIMITS.sigmaMin && sigma >= LIMITS.sigmaMin) {
    throw new InvalidArgumentError("reuse", `noise-multiplier / sqrt(reuse) = ${sigma} / sqrt(${k}) = ${effective.toPrecision(3)} is the noise accounted per step and must be at least ${LIMITS.sigmaMin}; lower the reuse or raise the noise multiplier`);
  }
  return effective;
}

/** Parallel composition (disjoint data): epsilon is the maximum over stages, at the same delta. */
export function composeParallel(stages: readonly StageMechanisms[], delta: number, accountant?: AccountantName | string, options?: AccountantOptions): Composed {
  validateDelta(delta);
  const perStage = stages.map((s) => {
    const r = epsilon({ mechanisms: s.mechanisms, delta, accountant, options });
    return { stage: s.stage, epsilon: r.epsilon, error: r.error, r };
  });
  const worst = perStage.reduce((m, s) => (s.epsilon > m.epsilon ? s : m), perStage[0]);
  if (!worst) throw new InvalidArgumentError("stages", "nothing to compose");
  return { ...worst.r, perStage: perStage.map(({ stage, epsilon: e, error }) => ({ stage, epsilon: e, error })) };
}

/** Sequential composition (one user in every stage): all mechanisms composed by the accountant. */
export function composeSequential(stages: readonly StageMechanisms[], delta: number, accountant?: AccountantName | string, options?: AccountantOptions): Composed {
  validateDelta(delta);
  const all = stages.flatMap((s) => s.mechanisms);
  const total = epsilon({ mechanisms: all, delta, accountant, options });
  const perStage = stages.map((s) => {
    const r = epsilon({ mechanisms: s.mechanisms, delta, accountant, options });
    return { stage: s.stage, epsilon: r.epsilon, error: r.error };
  });
  return { ...total, perStage };
}

/** Composes stages in the given mode. */
export function compose(mode: CompositionMode, stages: readonly StageMechanisms[], delta: number, accountant?: AccountantName | string, options?: AccountantOptions): Composed {
  return mode === "parallel" ? composeParallel(stages, delta, accountant, options) : composeSequential(stages, delta, accountant, options);
}

/** Arguments of `splitBudget`. */
export interface SplitArgs {
  readonly targetEpsilon: number;
  readonly delta: number;
  readonly composition: CompositionMode;
  /** Stages to calibrate (their sigma, if any, is ignored). */
  readonly stages: readonly StagePlan[];
  readonly accountant?: AccountantName | string;
}

/**
 * Calibrates each stage's sigma so the whole plan meets the target. Parallel: every stage gets
 * the full target. Sequential: each stage first gets the sigma it would need alone, then all
 * sigmas are scaled by one common factor until the composition meets the target.
 */
export function splitBudget(args: SplitArgs): { stages: StagePlan[]; result: Composed } {
  validateEpsilon(args.targetEpsilon);
  validateDelta(args.delta);
  const alone = args.stages.map((s) => {
    const k = s.reuse ?? 1;
    const c = calibrateSigma({ q: s.q, steps: s.steps, targetEpsilon: args.targetEpsilon, delta: args.delta, accountant: args.accountant });
    return { ...s, sigma: c.sigma * Math.sqrt(k) }; // the accounted sigma is sigma / sqrt(K)
  });
  const evaluate = (stages: readonly StagePlan[], options: AccountantOptions = {}): Composed =>
    compose(args.composition, stages.map((s) => ({ stage: s.stage, mechanisms: [stageMechanism(s)] })), args.delta, args.accountant, options);
  if (args.composition === "parallel") return { stages: alone, result: evaluate(alone) };
  // Search the common factor on a coarse grid (also an upper bound), then confirm on the fine one.
  const coarse = { errorEstimate: false, targetN: 1 << 14 };
  const scaled = (f: number): StagePlan[] => alone.map((s) => ({ ...s, sigma: (s.sigma ?? 0) * f }));
  let lo = 1;
  let hi = Math.sqrt(alone.length) * 1.1;
  while (evaluate(scaled(hi), coarse).epsilon > args.targetEpsilon) hi *= 1.5;
  for (let i = 0; i < 30 && hi / lo > 1 + 5e-4; i++) {
    const mid = Math.sqrt(lo * hi);
    if (evaluate(scaled(mid), coarse).epsilon > args.targetEpsilon) lo = mid;
    else hi = mid;
  }
  let result = evaluate(scaled(hi));
  while (result.epsilon > args.targetEpsilon) {
    hi *= 1.002;
    result = evaluate(scaled(hi));
  }
  return { stages: scaled(hi), result };
}
