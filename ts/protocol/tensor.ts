/**
 * Tensors as they cross the worker boundary: a dtype, a row-major shape and the raw little-endian
 * bytes in a typed array. int64 uses BigInt64Array so token ids and counts stay exact.
 */
export type DType = "float32" | "float64" | "float16" | "bfloat16" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool";

type Storage = Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array;

const ITEM_SIZE: Record<DType, number> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

export function itemSize(dtype: DType): number {
  return ITEM_SIZE[dtype];
}

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(ITEM_SIZE, s);
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export class Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** float16 and bfloat16 keep their raw 16-bit patterns in a Uint16Array; bool uses Uint8Array. */
  readonly data: Storage;

  constructor(dtype: DType, shape: readonly number[], data: Storage) {
    if (data.length !== numel(shape)) {
      throw new RangeError(`tensor data has ${data.length} elements but shape [${shape.join(", ")}] needs ${numel(shape)}`);
    }
    this.dtype = dtype;
    this.shape = shape.slice();
    this.data = data;
  }

  get size(): number {
    return this.data.length;
  }

  static float32(values: ArrayLike<number>, shape: readonly number[] = [values.length]): Tensor {
    return new Tensor("float32", shape, Float32Array.from(values));
  }

  static int64(values: ArrayLike<number | bigint>, shape: readonly number[] = [values.length]): Tensor {
    const out = new BigInt64Array(values.length);
    for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]);
    return new Tensor("int64", shape, out);
  }

  /** Right-pads ragged integer rows with `pad` into an int64 [rows, maxLen] tensor. */
  static paddedInt64(rows: readonly (readonly number[])[], pad: number, minWidth = 0): Tensor {
    const width = Math.max(minWidth, ...rows.map((r) => r.length), 0);
    const out = new BigInt64Array(rows.length * width).fill(BigInt(pad));
    rows.forEach((r, i) => r.forEach((v, j) => (out[i * width + j] = BigInt(v))));
    return new Tensor("int64", [rows.length, width], out);
  }

  /** Pads ragged float rows with `pad` into a float32 [rows, width] tensor. */
  static paddedFloat32(rows: readonly (readonly number[])[], pad = 0, width?: number): Tensor {
    const w = width ?? Math.max(0, ...rows.map((r) => r.length));
    const out = new Float32Array(rows.length * w).fill(pad);
    rows.forEach((r, i) => r.forEach((v, j) => (out[i * w + j] = v)));
    return new Tensor("float32", [rows.length, w], out);
  }

  /** All elements as JS numbers (int64 converted; float16/bfloat16 decoded). */
  toNumbers(): number[] {
    if (this.dtype === "float16") return Array.from(this.data as Uint16Array, halfToFloat);
    if (this.dtype === "bfloat16") return Array.from(this.data as Uint16Array, bf16ToFloat);
    return Array.from(this.data as ArrayLike<number | bigint>, Number);
  }

  /** A 2-D tensor as rows of numbers, each cut to `lengths[i]` when given. */
  rows(lengths?: readonly number[]): number[][] {
    if (this.shape.length !== 2) throw new RangeError(`rows() needs a 2-D tensor, got shape [${this.shape.join(", ")}]`);
    const [n, w] = this.shape;
    const flat = this.toNumbers();
    const out: number[][] = [];
    for (let i = 0; i < n; i++) out.push(flat.slice(i * w, i * w + (lengths ? lengths[i] : w)));
    return out;
  }

  /** The raw little-endian bytes (a view, no copy). */
  bytes(): Uint8Array {
    return new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }

  /** Decodes raw bytes; the byte count must match dtype and shape. */
  static fromBytes(dtype: DType, shape: readonly number[], bytes: Uint8Array): Tensor {
    const n = numel(shape);
    if (bytes.byteLength !== n * ITEM_SIZE[dtype]) {
      throw new RangeError(`${bytes.byteLength} bytes do not match dtype ${dtype} and shape [${shape.join(", ")}]`);
    }
    // Typed arrays need an offset that is a multiple of the item size: a view when the received
    // frame is aligned (zeromq.js gives large frames a buffer of their own at offset 0, so a large
    // tensor is not copied), else one copy into a fresh buffer.
    let buf: ArrayBufferLike;
    let offset: number;
    if (bytes.byteOffset % ITEM_SIZE[dtype] === 0) {
      buf = bytes.buffer;
      offset = bytes.byteOffset;
    } else {
      buf = new ArrayBuffer(bytes.byteLength);
      new Uint8Array(buf).set(bytes);
      offset = 0;
    }
    const storage: Storage =
      dtype === "float32" ? new Float32Array(buf, offset, n)
      : dtype === "float64" ? new Float64Array(buf, offset, n)
      : dtype === "int64" ? new BigInt64Array(buf, offset, n)
      : dtype === "int32" ? new Int32Array(buf, offset, n)
      : dtype === "int16" ? new Int16Array(buf, offset, n)
      : dtype === "int8" ? new Int8Array(buf, offset, n)
      : dtype === "float16" || dtype === "bfloat16" ? new Uint16Array(buf, offset, n)
      : new Uint8Array(buf, offset, n);
    return new Tensor(dtype, shape, storage);
  }
}

function bf16ToFloat(h: number): number {
  const f = new Float32Array(new Uint32Array([h << 16]).buffer);
  return f[0];
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (m / 1024);
  if (e === 31) return m ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + m / 1024);
}

export type TensorMap = Record<string, Tensor>;
