import { createHash, randomBytes } from "node:crypto";

/** What sampling, shuffling and seed derivation need from a generator (seeded or secret-keyed). */
export interface Rng {
  /** Uniform in [0, 1) with 53 bits of precision. */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** A child generator with its own stream, derived from this one's key or seed and a label. */
  fork(label: string): Rng;
  /** A seed for a worker or a sub-process, drawn from this stream (fits in 63 bits). */
  seedForChild(): bigint;
  /** Fisher-Yates shuffle of a copy. */
  shuffle<T>(items: readonly T[]): T[];
}

/**
 * The control plane's generator for public randomness: a seeded xoshiro256** generator whose seed
 * is recorded in the run (public roles, pre-training, the public classifier, evaluation prompts).
 * Randomness that selects private records never comes from here: it comes from a KeyedRng under
 * the run's secret key (DESIGN.md rule 7). Math.random is never used.
 */
export class SeededRng implements Rng {
  readonly seed: bigint;
  private s: BigUint64Array;

  constructor(seed: number | bigint | string) {
    this.seed = typeof seed === "string" ? BigInt.asUintN(64, BigInt("0x" + sha256(seed).slice(0, 16))) : BigInt.asUintN(64, BigInt(seed));
    // splitmix64 expands the 64-bit seed into the 256-bit state, as the xoshiro authors recommend.
    this.s = new BigUint64Array(4);
    let x = this.seed;
    for (let i = 0; i < 4; i++) {
      x = BigInt.asUintN(64, x + 0x9e3779b97f4a7c15n);
      let z = x;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      this.s[i] = z ^ (z >> 31n);
    }
  }

  /** A fresh 63-bit seed from the OS's cryptographic source, for runs that do not fix one. */
  static cryptoSeed(): bigint {
    return randomBytes(8).readBigUInt64LE() >> 1n;
  }

  /** A child generator with its own stream, derived from this seed and a label (e.g. "split"). */
  fork(label: string): SeededRng {
    return new SeededRng(`${this.seed.toString()}/${label}`);
  }

  nextU64(): bigint {
    const s = this.s;
    const result = BigInt.asUintN(64, rotl(BigInt.asUintN(64, s[1] * 5n), 7n) * 9n);
    const t = BigInt.asUintN(64, s[1] << 17n);
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45n);
    return result;
  }

  /** Uniform in [0, 1) with 53 bits of precision. */
  next(): number {
    return Number(this.nextU64() >> 11n) / 2 ** 53;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A seed for a worker or a sub-process, drawn from this stream (fits in 63 bits). */
  seedForChild(): bigint {
    return this.nextU64() >> 1n;
  }

  /** Fisher-Yates shuffle of a copy. */
  shuffle<T>(items: readonly T[]): T[] {
    return fisherYates(this, items);
  }
}

export function fisherYates<T>(rng: Pick<Rng, "int">, items: readonly T[]): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function rotl(x: bigint, k: bigint): bigint {
  return BigInt.asUintN(64, (x << k) | (x >> (64n - k)));
}

function sha256(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}
