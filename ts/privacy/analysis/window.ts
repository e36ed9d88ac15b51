/**
 * The FFT window of a composition: where the composed privacy loss lives, from the hard support
 * of the discrete PLDs and Chernoff bounds computed from their own moment generating functions
 * (so the bound on the mass that could wrap around is rigorous for the discrete PLDs composed).
 */
import type { DiscretePld, PldPart } from "./pld.js";

function moments(p: DiscretePld): { mass: number; mean: number; variance: number } {
  let m0 = 0;
  let m1 = 0;
  for (let i = 0; i < p.pmf.length; i++) {
    m0 += p.pmf[i];
    m1 += p.pmf[i] * i;
  }
  const mean = m0 > 0 ? m1 / m0 : 0;
  let m2 = 0;
  for (let i = 0; i < p.pmf.length; i++) m2 += p.pmf[i] * (i - mean) * (i - mean);
  return { mass: m0, mean: p.kLo + mean, variance: m0 > 0 ? m2 / m0 : 0 };
}

/** A PLD's finite part in blocks: block mass, lowest and highest grid index (for MGF bounds). */
interface Blocks {
  mass: Float64Array;
  lo: Float64Array;
  hi: Float64Array;
}

function toBlocks(p: DiscretePld, maxBlocks = 2048): Blocks {
  const n = p.pmf.length;
  const b = Math.max(1, Math.ceil(n / maxBlocks));
  const nb = Math.ceil(n / b);
  const mass = new Float64Array(nb);
  const lo = new Float64Array(nb);
  const hi = new Float64Array(nb);
  for (let j = 0; j < nb; j++) {
    let m = 0;
    const end = Math.min(n, (j + 1) * b);
    for (let i = j * b; i < end; i++) m += p.pmf[i];
    mass[j] = m;
    lo[j] = p.kLo + j * b;
    hi[j] = p.kLo + end - 1;
  }
  return { mass, lo, hi };
}

/** An upper bound on log sum_k p_k e^{lambda (k - c)} (grid units), from the blocks. */
function logMgfBound(bl: Blocks, lambda: number, c: number): number {
  const pos = lambda > 0 ? bl.hi : bl.lo;
  let m = -Infinity;
  for (let j = 0; j < pos.length; j++) if (bl.mass[j] > 0) m = Math.max(m, lambda * (pos[j] - c));
  let s = 0;
  for (let j = 0; j < pos.length; j++) if (bl.mass[j] > 0) s += bl.mass[j] * Math.exp(lambda * (pos[j] - c) - m);
  return m + Math.log(s);
}

/** The grid window [lo, hi] (grid units) holding all but `tau` of the composed mass on each side. */
export interface Window {
  lo: number;
  hi: number;
  /** Chernoff bound on the composed mass above grid index `edge`. */
  massAbove: (edge: number) => number;
  /** The Chernoff exponents (per unit of loss) that gave the upper and lower edges. */
  lambdaUpper: number;
  lambdaLower: number;
}

/**
 * Window for a composition, from the hard support and Chernoff bounds on the discrete PLDs.
 * `hint` (exponents per unit of loss from a coarser grid) narrows the search to three exponents.
 */
export function compositionWindow(parts: readonly PldPart[], tau: number, hint?: { upper: number; lower: number }): Window {
  let supLo = 0;
  let supHi = 0;
  let mean = 0;
  let variance = 0;
  const stats = parts.map((p) => moments(p.pld));
  parts.forEach((p, j) => {
    supLo += p.count * p.pld.kLo;
    supHi += p.count * (p.pld.kLo + p.pld.pmf.length - 1);
    mean += p.count * stats[j].mean;
    variance += p.count * stats[j].variance;
  });
  const exact = { lo: supLo, hi: supHi, massAbove: (e: number) => (e >= supHi ? 0 : 1), lambdaUpper: NaN, lambdaLower: NaN };
  if (variance <= 0 || supHi - supLo < 4096) return exact;
  const h = parts[0].pld.h;
  // Blocks overstate each step's loss by up to (block width - 1) grid points, so only one-step
  // parts are blocked; a part composed c times uses its exact PMF.
  const blocks = parts.map((p) => toBlocks(p.pld, p.count === 1 ? 2048 : Infinity));
  const logInvTau = Math.log(1 / tau);
  const grid = (ls: number[]): number[] => ls.filter((l) => Number.isFinite(l) && l > 0);
  let upL: number[];
  let loL: number[];
  if (hint && Number.isFinite(hint.upper) && Number.isFinite(hint.lower)) {
    upL = grid([0.8, 1, 1.25].map((f) => f * hint.upper * h));
    loL = grid([0.8, 1, 1.25].map((f) => f * hint.lower * h));
  } else {
    const lam0 = Math.sqrt((2 * logInvTau) / variance);
    const all = [0.5, 1, 2].map((f) => f * lam0);
    for (let e = -3; e <= 12; e++) all.push(2 ** e * h); // 2^e per unit of loss, in grid units
    upL = all;
    loL = all;
  }
  const cgf = (l: number): number => parts.reduce((s, p, j) => s + p.count * logMgfBound(blocks[j], l, stats[j].mean), 0);
  const upper = upL.map((l) => ({ l, k: cgf(l) })).filter((u) => Number.isFinite(u.k));
  const lower = loL.map((l) => ({ l, k: cgf(-l) })).filter((u) => Number.isFinite(u.k));
  let hi = Infinity;
  let lo = -Infinity;
  let lambdaUpper = NaN;
  let lambdaLower = NaN;
  for (const u of upper) {
    const t = mean + (u.k + logInvTau) / u.l;
    if (t < hi) [hi, lambdaUpper] = [t, u.l / h];
  }
  for (const d of lower) {
    const t = mean - (d.k + logInvTau) / d.l;
    if (t > lo) [lo, lambdaLower] = [t, d.l / h];
  }
  if (!Number.isFinite(hi) || !Number.isFinite(lo)) return exact;
  hi = Math.min(supHi, Math.ceil(hi));
  lo = Math.max(supLo, Math.floor(lo));
  const massAbove = (edge: number): number => {
    if (edge >= supHi) return 0;
    let best = 1;
    for (const u of upper) best = Math.min(best, Math.exp(u.k - u.l * (edge - mean)));
    return best;
  };
  return { lo, hi, massAbove, lambdaUpper, lambdaLower };
}

