/**
 * A minimal reader of safetensors files (8-byte little-endian header length, a JSON header of
 * {name: {dtype, shape, data_offsets}}, then raw little-endian data), for the audit's white-box
 * look at a model's weights in a worker checkpoint. Floating-point tensors only.
 */
import { readFileSync } from "node:fs";
import { DpalignError } from "../util/errors.js";

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const SIZES: Record<string, number> = { F32: 4, F64: 8 };

/** Every tensor of `file` as a flat Float64Array (row-major), by name. */
export function readSafetensors(file: string): Map<string, Float64Array> {
  const buf = readFileSync(file);
  const bad = (why: string) => new DpalignError("CHECKPOINT_INVALID", `${file}: not a readable safetensors file (${why})`);
  if (buf.length < 8) throw bad("too short");
  const n = Number(buf.readBigUInt64LE(0));
  if (!(n > 0 && 8 + n <= buf.length)) throw bad("bad header length");
  let header: Record<string, Entry | Record<string, string>>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as typeof header;
  } catch {
    throw bad("header is not JSON");
  }
  const base = 8 + n;
  const out = new Map<string, Float64Array>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const e = raw as Entry;
    const size = SIZES[e.dtype];
    if (!size) throw bad(`tensor ${name} has dtype ${e.dtype}; only F32 and F64 are read`);
    const [begin, end] = e.data_offsets;
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (end - begin !== count * size || base + end > buf.length) throw bad(`tensor ${name} has inconsistent offsets`);
    const values = new Float64Array(count);
    for (let i = 0; i < count; i++) values[i] = size === 4 ? buf.readFloatLE(base + begin + 4 * i) : buf.readDoubleLE(base + begin + 8 * i);
    out.set(name, values);
  }
  return out;
}

/** The tensors `names` of a safetensors file flattened and concatenated in that order. */
export function flatParameters(file: string, names: readonly string[]): Float64Array {
  const tensors = readSafetensors(file);
  const parts = names.map((n) => {
    const t = tensors.get(n);
    if (!t) throw new DpalignError("CHECKPOINT_INVALID", `${file}: no tensor ${n}`);
    return t;
  });
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
