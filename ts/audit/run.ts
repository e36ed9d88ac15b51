/**
 * `dpalign audit`: an empirical lower bound on epsilon from one training run of the real DP
 * engine (one-run auditing, Steinke, Nasr, Jagielski 2023), to set beside the accountant's
 * epsilon. A bound above the claimed epsilon means the engine leaks more than accounted.
 *
 * 1. Noise: ts/privacy calibrates sigma for the claimed (epsilon, delta) at the audit's q and T.
 * 2. Canaries: m white-box gradient canaries, canary i a training example whose per-example
 *    gradient is the Dirac vector -(10 C) e_i on trainable coordinate i (the worker's
 *    dirac_canary loss), so clipping binds. Each is included in the training set by an independent
 *    fair coin from the OS's CSPRNG (crypto.randomBytes).
 * 3. Training: T DP steps of the worker's unchanged engine (per-example gradients -> clip to C ->
 *    sum -> Gaussian noise sigma*C once per step -> divide by the expected batch size -> DP-SGD,
 *    constant lr, no momentum or weight decay), each on a Poisson sample (rate q, CSPRNG) of the
 *    included canaries, as the pipeline's DP stages sample. Secure noise.
 * 4. Scores: the final minus initial value of coordinate i (read from worker checkpoints), in
 *    units of one clipped contribution: (number of steps that sampled canary i if included) + noise.
 * 5. Bound: guess "in" for the k highest scores and "out" for the k lowest; the number of correct
 *    guesses gives a lower bound at 95% confidence (ts/audit/analysis.ts), the best over a few k
 *    with a Bonferroni correction.
 *
 * `broken` shows the audit's power by misconfiguring what the control plane sends, never the
 * engine: "noise" asks the worker for sigma/10 while the accountant's claim stays at sigma;
 * "clip" asks for C' = 1000 C (no canary is clipped) with the noise multiplier sigma C / C', so the
 * noise std stays sigma*C, calibrated for the accounted C.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { calibrateSigma, resolveAccountant, validateDelta } from "../privacy/index.js";
import type { Progress } from "../pipeline/progress.js";
import type { DpSpec, ModelInfo, TrainStepReply } from "../protocol/messages.js";
import { Tensor, type TensorMap } from "../protocol/tensor.js";
import { DpalignError, InvalidArgumentError } from "../util/errors.js";
import type { WorkerApi } from "../worker/api.js";
import { T } from "../worker/batches.js";
import { auditScores, defaultKs, type KResult } from "./analysis.js";
import { flatParameters } from "./safetensors.js";

export type BrokenMode = "none" | "noise" | "clip";
export const BROKEN_MODES: readonly BrokenMode[] = ["none", "noise", "clip"];

/** The accounted clipping norm C (any value: scores are in units of C). */
export const CLIP = 1;
/** Each canary's gradient norm, in units of C: well above C, so clipping binds. */
export const CANARY_NORM = 10;
/** --broken noise: the worker gets sigma / NOISE_DIVISOR. */
export const NOISE_DIVISOR = 10;
/** --broken clip: the worker gets C' = CLIP_OFF * C (clipping never binds) and sigma C / C'. */
export const CLIP_OFF = 1000;
export const MAX_CANARIES = 100_000;
export const MAX_STEPS = 100_000;

export interface AuditOptions {
  epsilon: number;
  delta: number;
  canaries: number;
  steps: number;
  sampleRate: number;
  broken?: BrokenMode;
  accountant?: string;
  confidence?: number;
  /** A k fixed in advance (no multiple-test correction); default: a sweep over defaultKs(m). */
  k?: number;
  progress?: Progress;
}

export interface AuditResult {
  claimedEpsilon: number;
  delta: number;
  accountant: string;
  /** The accountant's epsilon for the calibrated sigma (<= claimed). */
  accountantEpsilon: number;
  /** Noise multiplier and clipping norm the accountant's claim is for. */
  sigma: number;
  clip: number;
  sampleRate: number;
  steps: number;
  broken: BrokenMode;
  /** What the worker was asked for and reported. */
  engine: { noiseMultiplier: number; maxGradNorm: number; noiseStd: number; noiseMode: string };
  canaries: number;
  included: number;
  canaryNorm: number;
  model: { nEmbd: number; trainableParameters: number };
  confidence: number;
  /** Significance of each of the k tests (Bonferroni over the k values tried). */
  significance: number;
  ksTried: number[];
  perK: KResult[];
  best: KResult;
  /** The audit's lower bound on epsilon at `confidence`. */
  lowerBound: number;
  /** The largest bound these settings could show (every guess correct). */
  ceiling: number;
  violation: boolean;
  /** Mean score of included and excluded canaries, and the excluded ones' standard deviation. */
  signal: { meanIn: number; meanOut: number; sdOut: number };
  wallS: number;
  /** Per canary: included, score (not in --json output; written to --out). */
  scores: { included: boolean; score: number }[];
}

function int(v: number, field: string, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new InvalidArgumentError(field, `must be an integer in [${min}, ${max}], got ${v}`);
  return v;
}

export function validateAuditOptions(o: AuditOptions): void {
  if (!(Number.isFinite(o.epsilon) && o.epsilon > 0)) throw new InvalidArgumentError("epsilon", `must be a number > 0, got ${o.epsilon}`);
  if (!Number.isFinite(o.delta)) throw new InvalidArgumentError("delta", `must be a number in (0, 1), got ${o.delta}`);
  validateDelta(o.delta);
  int(o.canaries, "canaries", 20, MAX_CANARIES);
  int(o.steps, "steps", 1, MAX_STEPS);
  if (!(o.sampleRate > 0 && o.sampleRate <= 1)) throw new InvalidArgumentError("sample-rate", `must lie in (0, 1], got ${o.sampleRate}`);
  if (o.broken !== undefined && !BROKEN_MODES.includes(o.broken)) throw new InvalidArgumentError("broken", `must be one of ${BROKEN_MODES.join(", ")}, got ${String(o.broken)}`);
  if (o.k !== undefined) int(o.k, "k", 1, Math.floor(o.canaries / 2));
  if (o.confidence !== undefined && !(o.confidence > 0 && o.confidence < 1)) throw new InvalidArgumentError("confidence", `must lie in (0, 1), got ${o.confidence}`);
  resolveAccountant(o.accountant ?? "prv");
}

/** Uniform numbers in [0, 1) with 53 bits each, from the OS's CSPRNG. */
function cryptoUniforms(n: number): Float64Array {
  const b = randomBytes(8 * n);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (b.readUInt32BE(8 * i) * 2 ** 21 + (b.readUInt32BE(8 * i + 4) >>> 11)) / 2 ** 53;
  return out;
}

/** Independent fair coins from the OS's CSPRNG. */
function cryptoCoins(n: number): boolean[] {
  const b = randomBytes(n);
  return Array.from(b, (x) => (x & 1) === 1);
}

/** Trainable parameters of the audit's one-layer tiny GPT-2 with embedding width e (vocab ~260, 8 positions). */
function tinyParameters(e: number, vocab = 258, positions = 8): number {
  return vocab * e + positions * e + 12 * e * e + 15 * e;
}

/** The DP settings an audit asks of the worker, every one of them set. */
export type AuditDpSpec = Required<Pick<DpSpec, "enabled" | "noiseMultiplier" | "maxGradNorm" | "expectedBatchSize" | "secureNoise">>;

/** The DpSpec the worker gets: the real engine's, or a broken one. */
export function engineSpec(broken: BrokenMode, sigma: number, expectedBatchSize: number): AuditDpSpec {
  const spec = { enabled: true, expectedBatchSize, secureNoise: true };
  if (broken === "noise") return { ...spec, noiseMultiplier: sigma / NOISE_DIVISOR, maxGradNorm: CLIP };
  if (broken === "clip") return { ...spec, noiseMultiplier: (sigma * CLIP) / (CLIP_OFF * CLIP), maxGradNorm: CLIP_OFF * CLIP };
  return { ...spec, noiseMultiplier: sigma, maxGradNorm: CLIP };
}

function checkReply(r: TrainStepReply, examples: number, dp: AuditDpSpec): void {
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
  if (r.examples !== examples || !r.dp || r.noiseMode !== "secure" || !close(r.noiseMultiplier, dp.noiseMultiplier)
    || !close(r.maxGradNorm, dp.maxGradNorm) || !close(r.noiseStd, dp.noiseMultiplier * dp.maxGradNorm)) {
    throw new DpalignError("MECHANISM_MISMATCH",
      `audit: the worker ran (examples ${r.examples}, dp ${r.dp}, noise ${r.noiseMode}, sigma ${r.noiseMultiplier}, C ${r.maxGradNorm}, std ${r.noiseStd}) `
      + `but was asked for (examples ${examples}, secure noise, sigma ${dp.noiseMultiplier}, C ${dp.maxGradNorm})`);
  }
}

const HANDLE = "audit";

/** Runs the audit on a worker; see the file's comment for the procedure. */
export async function runAudit(api: WorkerApi, o: AuditOptions): Promise<AuditResult> {
  validateAuditOptions(o);
  const t0 = Date.now();
  const broken = o.broken ?? "none";
  const m = o.canaries;
  const q = o.sampleRate;
  const log = (s: string) => o.progress?.log(s);
  const accountant = resolveAccountant(o.accountant ?? "prv");

  const cal = calibrateSigma({ q, steps: o.steps, targetEpsilon: o.epsilon, delta: o.delta, accountant });
  const sigma = cal.sigma;
  // Expected batch size from public quantities only (m/2 canaries in expectation): a constant factor.
  const expectedBatch = (q * m) / 2;
  const dp = engineSpec(broken, sigma, expectedBatch);
  const lr = expectedBatch / CLIP; // one clipped contribution moves its coordinate by exactly 1
  log(`audit: sigma ${sigma.toPrecision(5)} for epsilon ${o.epsilon} at delta ${o.delta} (q ${q}, ${o.steps} steps, ${accountant}); worker gets sigma ${dp.noiseMultiplier.toPrecision(5)}, C ${dp.maxGradNorm}${broken === "none" ? "" : ` (broken: ${broken})`}`);

  const included = cryptoCoins(m);
  const members = included.flatMap((b, i) => (b ? [i] : []));
  const work = mkdtempSync(join(tmpdir(), "dpalign-audit-"));
  try {
    // A tiny model from scratch: random weights suffice for gradient canaries. Its tokenizer is
    // trained on a fixed public string (the model needs one; no text is ever tokenized).
    const tokenizerDir = join(work, "tokenizer");
    await api.trainTokenizer({ texts: ["dpalign one-run privacy audit with dirac gradient canaries"], vocabSize: 260, outDir: tokenizerDir });
    const nEmbd = [16, 32, 64, 128, 256, 512].find((e) => tinyParameters(e) >= m) ?? 512;
    const info: ModelInfo = await api.loadModel({
      handle: HANDLE,
      spec: { tiny: { nLayer: 1, nHead: 1, nEmbd, nPositions: 8, tokenizerDir }, lora: { rank: 0, alpha: 1, targetModules: [] }, trainBase: true, initSeed: 0 },
      optimizer: { name: "sgd", lr, weightDecay: 0, momentum: 0 },
    });
    try {
      const d = info.trainableParameters;
      if (d < m) throw new InvalidArgumentError("canaries", `${m} canaries need as many trainable parameters; the audit model has ${d}`);
      // canary i lives on coordinate i of the flattened trainable parameters
      const microBatchSize = Math.max(1, Math.floor(2 ** 24 / d)); // ~64 MiB of per-example gradients at a time
      await api.saveCheckpoint({ handle: HANDLE, dir: join(work, "initial") });
      o.progress?.start("audit", o.steps);
      let last: TrainStepReply | undefined;
      for (let t = 0; t < o.steps; t++) {
        let batch = members;
        if (q < 1) {
          const u = cryptoUniforms(members.length);
          batch = members.filter((_, j) => u[j] < q);
        }
        const tensors: TensorMap = batch.length === 0 ? {} : {
          [T.canaryIndex]: Tensor.int64(batch),
          [T.canaryScale]: Tensor.float32(new Float32Array(batch.length).fill(CANARY_NORM * CLIP)),
        };
        last = await api.trainStep({ handle: HANDLE, loss: "dirac_canary", batch: tensors, dp, lr, microBatchSize });
        checkReply(last, batch.length, dp);
        o.progress?.update(t + 1);
      }
      o.progress?.stop();
      await api.saveCheckpoint({ handle: HANDLE, dir: join(work, "final") });
      const names = info.trainableNames;
      const before = flatParameters(join(work, "initial", "weights.safetensors"), names);
      const after = flatParameters(join(work, "final", "weights.safetensors"), names);
      if (before.length !== d || after.length !== d) throw new DpalignError("CHECKPOINT_INVALID", `audit: the checkpoint holds ${after.length} trainable values, the model ${d}`);
      const unit = (lr * CLIP) / expectedBatch;
      const scores = Array.from({ length: m }, (_, i) => (after[i] - before[i]) / unit);

      const ks = o.k !== undefined ? [o.k] : defaultKs(m);
      const a = auditScores(scores, included, { delta: o.delta, confidence: o.confidence ?? 0.95, ks });
      const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);
      const ins = scores.filter((_, i) => included[i]);
      const outs = scores.filter((_, i) => !included[i]);
      const meanOut = mean(outs);
      return {
        claimedEpsilon: o.epsilon, delta: o.delta, accountant, accountantEpsilon: cal.result.epsilon, sigma, clip: CLIP,
        sampleRate: q, steps: o.steps, broken,
        engine: { noiseMultiplier: dp.noiseMultiplier, maxGradNorm: dp.maxGradNorm, noiseStd: last?.noiseStd ?? dp.noiseMultiplier * dp.maxGradNorm, noiseMode: last?.noiseMode ?? "secure" },
        canaries: m, included: members.length, canaryNorm: CANARY_NORM * CLIP, model: { nEmbd, trainableParameters: d },
        confidence: a.confidence, significance: a.significance, ksTried: ks, perK: a.perK, best: a.best,
        lowerBound: a.best.epsilon, ceiling: a.ceiling, violation: a.best.epsilon > o.epsilon,
        signal: { meanIn: mean(ins), meanOut, sdOut: Math.sqrt(mean(outs.map((x) => (x - meanOut) ** 2))) },
        wallS: (Date.now() - t0) / 1000,
        scores: scores.map((score, i) => ({ included: included[i], score })),
      };
    } finally {
      await api.unloadModel(HANDLE).catch(() => undefined);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
