import { createCipheriv, createHmac } from "node:crypto";
import { fisherYates, type Rng } from "./rng.js";

/** Bytes of keystream produced per refill: large enough that a Poisson sample of 25k records is a few refills. */
const BLOCK = 64 * 1024;

/**
 * A cryptographic generator for everything that selects private records (DESIGN.md rule 7): the
 * keystream of AES-256-CTR under a 256-bit key. Without the key its output cannot be predicted
 * or recomputed, which is what amplification by subsampling assumes. Children are keyed by
 * HMAC-SHA256(key, label), so every stream (a stage's batch t, a rollout's generation seed) is
 * independent of the others and of the order in which they are drawn.
 */
export class KeyedRng implements Rng {
  private readonly cipher;
  private buf = Buffer.alloc(0);
  private pos = 0;

  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new RangeError(`KeyedRng needs a 32-byte key, got ${key.length}`);
    this.cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  }

  fork(label: string): KeyedRng {
    return new KeyedRng(createHmac("sha256", this.key).update(label).digest());
  }

  /** A uniform number in [0, 1) from a keyed hash of `label`: a per-record coin that no other record moves. */
  unit(label: string): number {
    return toUnit(createHmac("sha256", this.key).update(label).digest(), 0);
  }

  next(): number {
    if (this.pos + 8 > this.buf.length) {
      this.buf = this.cipher.update(Buffer.alloc(BLOCK));
      this.pos = 0;
    }
    const u = toUnit(this.buf, this.pos);
    this.pos += 8;
    return u;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  seedForChild(): bigint {
    const hi = BigInt(Math.floor(this.next() * 2 ** 31));
    const lo = BigInt(Math.floor(this.next() * 2 ** 32));
    return (hi << 32n) | lo;
  }

  shuffle<T>(items: readonly T[]): T[] {
    return fisherYates(this, items);
  }
}

/** 53 bits of `b` at `off` as a uniform number in [0, 1). */
function toUnit(b: Buffer, off: number): number {
  return (b.readUInt32BE(off) * 2 ** 21 + (b.readUInt32BE(off + 4) >>> 11)) / 2 ** 53;
}
