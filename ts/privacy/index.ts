/**
 * Public API of dpalign's privacy accounting (all of it in the control plane, no Python).
 *
 *   epsilon({ mechanisms: [{ q, sigma, steps }], delta, accountant })  -> { epsilon, error, ... }
 *   calibrateSigma({ q, steps, targetEpsilon, delta, accountant })     -> { sigma, result }
 *   composeParallel / composeSequential / reuseMechanism / splitBudget
 *   PrivacyLedger (append, read, totals) and BudgetGuard (checkPlan, canRun, beforeStep)
 */
export { type Accountant, type AccountantOptions, createAccountant, PldAccountant, RdpAccountant, type RdpOptions } from "./accountants/index.js";
export { analyticGaussianDelta, analyticGaussianEpsilon } from "./analysis/gaussian.js";
export type { NumericalOptions } from "./analysis/numerical.js";
export { computeRdp, DEFAULT_RDP_ORDERS, rdpToEpsilon } from "./analysis/rdp.js";
export { type CalibrateArgs, type Calibration, calibrateSigma } from "./calibrate.js";
export { type Composed, compose, composeParallel, composeSequential, reuseMechanism, type SplitArgs, splitBudget, type StageMechanisms } from "./compose.js";
export { type EpsilonArgs, epsilon } from "./epsilon.js";
export { BudgetGuard, type BudgetGuardOptions, type LedgerEntry, type LedgerRecord, PrivacyLedger } from "./ledger.js";
export { type CompositionMode, parsePlan, type PrivacyPlan, readPlanFile, type StagePlan, stageMechanism } from "./plan.js";
export { ACCOUNTANT_NAMES, type AccountantName, type EpsilonResult, type Mechanism, resolveAccountant, validateDelta, validateMechanism } from "./types.js";
