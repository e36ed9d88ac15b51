/**
 * The statistics of one-run privacy auditing (Steinke, Nasr, Jagielski 2023, "Privacy Auditing
 * with One (1) Training Run", arXiv 2305.08846), as stateless functions.
 *
 * m canaries are each included independently with probability 1/2; after one training run the
 * auditor guesses "in" or "out" for r of them (abstaining on the rest) and gets v right. If the
 * mechanism is (epsilon, delta)-DP, the paper's analysis of approximate DP bounds the chance of v
 * or more correct guesses by
 *
 *   p(epsilon, delta) = beta + alpha * delta * 2m,       q = e^eps / (1 + e^eps)
 *   beta  = P[Binomial(r, q) >= v]                       (the pure-DP term: randomized response)
 *   alpha = max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i
 *
 * (with delta = 0 this is the pure-DP binomial bound). Observing v correct guesses rejects
 * "(epsilon, delta)-DP" at significance s whenever p(epsilon, delta) <= s; the audit's lower bound
 * is the largest such epsilon, found by bisection as in the paper. Every binomial probability is
 * computed exactly (log-space pmf from log-factorials, summed), never by a normal approximation.
 *
 * Guessing "in" for the k highest scores and "out" for the k lowest (r = 2k) and trying several
 * k is a multiple test: `auditScores` applies a Bonferroni correction over the k values tried, so
 * the reported best bound holds at the stated confidence. A k fixed in advance needs none.
 */
import { InvalidArgumentError } from "../util/errors.js";

export interface PValueArgs {
  /** Canaries, each included with probability 1/2. */
  m: number;
  /** Guesses made (abstentions excluded). */
  r: number;
  /** Correct guesses. */
  v: number;
  epsilon: number;
  delta: number;
}

export interface BoundArgs {
  m: number;
  r: number;
  v: number;
  delta: number;
  /** Significance level of the test (1 - confidence), e.g. 0.05. */
  significance: number;
}

const logFactorials: number[] = [0];

/** log(n!) for integers n >= 0 (a cumulative table, grown on demand). */
export function logFactorial(n: number): number {
  for (let i = logFactorials.length; i <= n; i++) logFactorials.push(logFactorials[i - 1] + Math.log(i));
  return logFactorials[n];
}

/** Probabilities P[Binomial(r, q) = j] for j = 0..r, with q = e^eps / (1 + e^eps), computed in log space. */
export function binomialPmfs(r: number, epsilon: number): Float64Array {
  // log q and log(1 - q) without cancellation, for any epsilon >= 0
  const t = Math.log1p(Math.exp(-epsilon));
  const logQ = -t;
  const log1mQ = -epsilon - t;
  const lr = logFactorial(r);
  const out = new Float64Array(r + 1);
  for (let j = 0; j <= r; j++) out[j] = Math.exp(lr - logFactorial(j) - logFactorial(r - j) + j * logQ + (r - j) * log1mQ);
  return out;
}

function checkCounts(m: number, r: number, v: number): void {
  for (const [name, x] of [["m", m], ["r", r], ["v", v]] as const) {
    if (!Number.isInteger(x) || x < 0) throw new InvalidArgumentError(name, `must be an integer >= 0, got ${x}`);
  }
  if (!(v <= r && r <= m)) throw new InvalidArgumentError("v", `need 0 <= v <= r <= m, got v ${v}, r ${r}, m ${m}`);
}

/** The p-value of v or more correct guesses out of r under the hypothesis "(epsilon, delta)-DP". */
export function pValue({ m, r, v, epsilon, delta }: PValueArgs): number {
  checkCounts(m, r, v);
  if (!(epsilon >= 0)) throw new InvalidArgumentError("epsilon", `must be >= 0, got ${epsilon}`);
  if (!(delta >= 0 && delta <= 1)) throw new InvalidArgumentError("delta", `must lie in [0, 1], got ${delta}`);
  if (v === 0) return 1;
  const pmf = binomialPmfs(r, epsilon);
  let beta = 0;
  for (let j = r; j >= v; j--) beta += pmf[j]; // smallest terms first
  if (delta === 0) return Math.min(1, beta);
  let alpha = 0;
  let sum = 0; // P[v - i <= Binomial(r, q) < v]
  for (let i = 1; i <= v; i++) {
    sum += pmf[v - i];
    alpha = Math.max(alpha, sum / i);
  }
  return Math.min(1, beta + alpha * delta * 2 * m);
}

/**
 * The largest epsilon that v correct guesses out of r reject at the given significance: the
 * mechanism is not (epsilon, delta)-DP for any smaller epsilon, with confidence 1 - significance.
 * 0 when even epsilon = 0 is not rejected.
 */
export function epsilonLowerBound({ m, r, v, delta, significance }: BoundArgs): number {
  if (!(significance > 0 && significance < 1)) throw new InvalidArgumentError("significance", `must lie in (0, 1), got ${significance}`);
  const p = (epsilon: number) => pValue({ m, r, v, epsilon, delta });
  if (p(0) > significance) return 0;
  // p grows with epsilon (and reaches 1 once q rounds to 1), so an upper end exists
  let lo = 0;
  let hi = 1;
  while (p(hi) <= significance) {
    lo = hi;
    hi *= 2;
  }
  for (let i = 0; i < 60 && hi - lo > 1e-12 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (p(mid) <= significance) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** Correct guesses when the k highest scores are guessed "in" and the k lowest "out" (k <= m/2). */
export function correctGuesses(scores: readonly number[], included: readonly boolean[], k: number): number {
  const m = scores.length;
  if (included.length !== m) throw new InvalidArgumentError("included", `has ${included.length} entries for ${m} scores`);
  if (!Number.isInteger(k) || k < 0 || 2 * k > m) throw new InvalidArgumentError("k", `must be an integer in [0, ${Math.floor(m / 2)}], got ${k}`);
  for (const s of scores) if (!Number.isFinite(s)) throw new InvalidArgumentError("scores", `must be finite numbers, got ${s}`);
  const order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a]);
  let v = 0;
  for (let j = 0; j < k; j++) {
    if (included[order[j]]) v++;
    if (!included[order[m - 1 - j]]) v++;
  }
  return v;
}

/**
 * The k values tried by default: fixed fractions of m (so the number of tests is known in
 * advance), deduplicated. The largest stays below m/2: about m/2 +- sqrt(m)/2 canaries are in, so
 * guessing every canary (k = m/2) would be wrong on the imbalance even with perfect scores.
 */
export function defaultKs(m: number): number[] {
  const ks = [0.01, 0.02, 0.05, 0.1, 0.2, 0.45].map((f) => Math.floor(f * m)).filter((k) => k >= 1 && 2 * k <= m);
  return [...new Set(ks)];
}

export interface KResult {
  k: number;
  /** Guesses (2k) and correct guesses. */
  r: number;
  v: number;
  /** Lower bound on epsilon at this k, at the Bonferroni-corrected significance. */
  epsilon: number;
}

export interface ScoresAudit {
  m: number;
  delta: number;
  confidence: number;
  /** Significance of each test: (1 - confidence) / number of k values tried. */
  significance: number;
  perK: KResult[];
  /** The k with the largest bound (the first one on ties). */
  best: KResult;
  /** The largest bound any k tried could give (every guess correct): the most this m can show. */
  ceiling: number;
}

/**
 * Lower bound on epsilon from canary scores and the true inclusion bits, trying each k in `ks`
 * (default: defaultKs(m)) with a Bonferroni correction, so `best.epsilon` holds with probability
 * at least `confidence` (if the mechanism is (epsilon, delta)-DP, the chance that
 * best.epsilon > epsilon is at most 1 - confidence).
 */
export function auditScores(
  scores: readonly number[], included: readonly boolean[], o: { delta: number; confidence?: number; ks?: readonly number[] },
): ScoresAudit {
  const m = scores.length;
  const confidence = o.confidence ?? 0.95;
  if (!(confidence > 0 && confidence < 1)) throw new InvalidArgumentError("confidence", `must lie in (0, 1), got ${confidence}`);
  if (!(o.delta >= 0 && o.delta < 1)) throw new InvalidArgumentError("delta", `must lie in [0, 1), got ${o.delta}`);
  const ks = o.ks ?? defaultKs(m);
  if (ks.length === 0) throw new InvalidArgumentError("k", `no k to try with ${m} canaries (need at least 2)`);
  const significance = (1 - confidence) / ks.length;
  const perK = ks.map((k) => {
    const v = correctGuesses(scores, included, k);
    return { k, r: 2 * k, v, epsilon: epsilonLowerBound({ m, r: 2 * k, v, delta: o.delta, significance }) };
  });
  const best = perK.reduce((a, b) => (b.epsilon > a.epsilon ? b : a));
  const ceiling = Math.max(...ks.map((k) => epsilonLowerBound({ m, r: 2 * k, v: 2 * k, delta: o.delta, significance })));
  return { m, delta: o.delta, confidence, significance, perK, best, ceiling };
}
