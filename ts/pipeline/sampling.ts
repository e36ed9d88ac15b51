/**
 * Poisson sampling (DESIGN.md rule 1): each example enters a step independently with
 * probability q; batch sizes vary and an empty batch is a valid step. In a private stage the rng is
 * keyed by the run's secret key (DESIGN.md rule 7), so the samples cannot be recomputed.
 */
import { InvalidArgumentError } from "../util/errors.js";
import type { Rng } from "../util/rng.js";

/** Indices in [0, n) that enter this step. */
export function poissonSample(n: number, q: number, rng: Rng): number[] {
  if (!(q >= 0 && q <= 1)) throw new InvalidArgumentError("q", `sampling rate must be in [0, 1], got ${q}`);
  const out: number[] = [];
  if (q === 0) return out;
  if (q >= 0.1) {
    for (let i = 0; i < n; i++) if (rng.next() < q) out.push(i);
    return out;
  }
  // Geometric skips: the gap to the next sampled index is Geometric(q); same distribution, O(qn) draws.
  const logq = Math.log1p(-q);
  let i = -1;
  for (;;) {
    const u = rng.next();
    i += 1 + Math.floor(Math.log1p(-u) / logq);
    if (i >= n) return out;
    out.push(i);
  }
}

/** Non-private batches: a seeded shuffle of [0, n) cut into batches of `size` (the last may be short). */
export function shuffledBatches(n: number, size: number, rng: Rng): number[][] {
  const idx = rng.shuffle(Array.from({ length: n }, (_, i) => i));
  const out: number[][] = [];
  for (let i = 0; i < n; i += size) out.push(idx.slice(i, i + size));
  return out;
}

/**
 * Non-private public-data training: fixed-size batches from a seeded order of [0, n), reshuffled
 * whenever fewer than `size` indices are left. Returns the function that gives the next batch.
 */
export function cyclingBatches(n: number, size: number, rng: Rng): () => number[] {
  let order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
  let cursor = 0;
  return () => {
    if (cursor + size > order.length) {
      order = rng.shuffle(order);
      cursor = 0;
    }
    return order.slice(cursor, (cursor += size));
  };
}
