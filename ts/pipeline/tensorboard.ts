/**
 * TensorBoard scalars of a run's RELEASED figures (`--tensorboard DIR`), written in TensorFlow's
 * event-file format by hand (no TensorFlow, no npm dependency):
 *
 *   file   = record*           record = uint64 length (LE), uint32 masked_crc32c(length bytes),
 *                                       data, uint32 masked_crc32c(data)
 *   masked_crc32c(x) = ((c >>> 15) | (c << 17)) + 0xa282ead8, c = CRC-32C (Castagnoli) of x
 *   data   = protobuf Event { double wall_time = 1; int64 step = 2; string file_version = 3;
 *                             Summary summary = 5 }   Summary { repeated Value value = 1 }
 *            Value { string tag = 1; float simple_value = 2 }
 *
 * The first record is `file_version: "brain.Event:2"`; each scalar is one Event. Records are
 * appended synchronously, so a stopped run leaves a readable file.
 *
 * What is written (DESIGN.md rule 9: released figures only):
 *   privacy/epsilon/<stage>         epsilon of the mechanism executed so far (ts/privacy's accountant,
 *                                   from the plan's q and accounted sigma and the batches the
 *                                   ledger accounts), at every commit point; step = batches
 *   time/wall_s/<stage>             wall time of each stage run in this invocation
 *   eval/reward/<model>, eval/reward_ci95/<model>, eval/eval_rm_reward/<model>, eval/rouge_l/<model>
 *   eval/reward_classifier_accuracy, eval/dp_rm_accuracy, privacy/epsilon/composed
 * Statistics of private batches (losses, rewards, KL, clipped fractions) are written only with
 * --verbose-private, under `private/<stage>/...`, and the run warns that the file is then private.
 * A reproducible (seeded) or non-private run is not differentially private: no epsilon is written.
 */
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { basename, join } from "node:path";
import type { Calibrator, StagePlan } from "./plan.js";

// -- CRC-32C (Castagnoli, reflected polynomial 0x82f63b78) -------------------------------------
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length, its masked CRC, the data, the data's masked CRC. */
export function tfRecord(data: Uint8Array): Buffer {
  const head = Buffer.alloc(12);
  head.writeBigUInt64LE(BigInt(data.length), 0);
  head.writeUInt32LE(maskedCrc32c(head.subarray(0, 8)), 8);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(maskedCrc32c(data), 0);
  return Buffer.concat([head, data, tail]);
}

// -- protobuf encoding of Event --------------------------------------------------------------------
function varint(v: bigint): number[] {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return out;
}

function lenField(field: number, bytes: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([...varint(BigInt((field << 3) | 2)), ...varint(BigInt(bytes.length))]), bytes]);
}

export interface ScalarEvent {
  wallTime: number;
  step: number;
  tag?: string;
  value?: number;
  fileVersion?: string;
}

export function encodeEvent(e: ScalarEvent): Buffer {
  const wall = Buffer.alloc(9);
  wall[0] = (1 << 3) | 1; // wall_time, fixed64
  wall.writeDoubleLE(e.wallTime, 1);
  const parts: Buffer[] = [wall, Buffer.from([(2 << 3) | 0, ...varint(BigInt(Math.trunc(e.step)))])];
  if (e.fileVersion !== undefined) parts.push(lenField(3, Buffer.from(e.fileVersion, "utf8")));
  if (e.tag !== undefined) {
    const f = Buffer.alloc(5);
    f[0] = (2 << 3) | 5; // simple_value, fixed32
    f.writeFloatLE(e.value ?? NaN, 1);
    const value = Buffer.concat([lenField(1, Buffer.from(e.tag, "utf8")), f]);
    parts.push(lenField(5, lenField(1, value)));
  }
  return Buffer.concat(parts);
}

// -- reading (tests, checks) -----------------------------------------------------------------------
function readVarint(b: Buffer, at: number): [bigint, number] {
  let x = 0n;
  let shift = 0n;
  for (;;) {
    if (at >= b.length) throw new RangeError("truncated varint");
    const byte = b[at++];
    x |= BigInt(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return [x, at];
    shift += 7n;
  }
}

/** Fields of one protobuf message: field number -> raw values (bigint, number or bytes). */
function fields(b: Buffer): Map<number, (bigint | Buffer)[]> {
  const out = new Map<number, (bigint | Buffer)[]>();
  let at = 0;
  while (at < b.length) {
    const [key, a1] = readVarint(b, at);
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    let v: bigint | Buffer;
    if (wire === 0) [v, at] = readVarint(b, a1);
    else if (wire === 1) [v, at] = [b.subarray(a1, a1 + 8), a1 + 8];
    else if (wire === 5) [v, at] = [b.subarray(a1, a1 + 4), a1 + 4];
    else if (wire === 2) {
      const [n, a2] = readVarint(b, a1);
      [v, at] = [b.subarray(a2, a2 + Number(n)), a2 + Number(n)];
    } else throw new RangeError(`unsupported wire type ${wire}`);
    out.set(field, [...(out.get(field) ?? []), v]);
  }
  return out;
}

export function decodeEvent(b: Buffer): ScalarEvent[] {
  const f = fields(b);
  const wallTime = (f.get(1)?.[0] as Buffer | undefined)?.readDoubleLE(0) ?? 0;
  const step = Number((f.get(2)?.[0] as bigint | undefined) ?? 0n);
  const fv = f.get(3)?.[0] as Buffer | undefined;
  if (fv) return [{ wallTime, step, fileVersion: fv.toString("utf8") }];
  const out: ScalarEvent[] = [];
  for (const summary of (f.get(5) ?? []) as Buffer[]) {
    for (const value of (fields(summary).get(1) ?? []) as Buffer[]) {
      const vf = fields(value);
      out.push({ wallTime, step, tag: (vf.get(1)?.[0] as Buffer).toString("utf8"), value: (vf.get(2)?.[0] as Buffer).readFloatLE(0) });
    }
  }
  return out;
}

/** Every event of an event file, after checking both CRCs of every record (throws on a mismatch). */
export function readEventFile(path: string): ScalarEvent[] {
  const buf = readFileSync(path);
  const events: ScalarEvent[] = [];
  let at = 0;
  while (at < buf.length) {
    if (at + 12 > buf.length) throw new RangeError(`${path}: truncated record header at byte ${at}`);
    const len = Number(buf.readBigUInt64LE(at));
    if (buf.readUInt32LE(at + 8) !== maskedCrc32c(buf.subarray(at, at + 8))) throw new RangeError(`${path}: length CRC mismatch at byte ${at}`);
    const data = buf.subarray(at + 12, at + 12 + len);
    if (data.length !== len || at + 16 + len > buf.length) throw new RangeError(`${path}: truncated record at byte ${at}`);
    if (buf.readUInt32LE(at + 12 + len) !== maskedCrc32c(data)) throw new RangeError(`${path}: data CRC mismatch at byte ${at}`);
    events.push(...decodeEvent(data));
    at += 16 + len;
  }
  return events;
}

// -- writer ------------------------------------------------------------------------------------------
let fileCounter = 0;

export class EventFileWriter {
  readonly path: string;
  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    const now = Date.now() / 1000;
    this.path = join(dir, `events.out.tfevents.${Math.floor(now)}.${hostname()}.${process.pid}.${fileCounter++}`);
    appendFileSync(this.path, tfRecord(encodeEvent({ wallTime: now, step: 0, fileVersion: "brain.Event:2" })));
  }

  scalar(tag: string, value: number, step: number, wallTime = Date.now() / 1000): void {
    appendFileSync(this.path, tfRecord(encodeEvent({ wallTime, step, tag, value })));
  }
}

// -- the run's hook ----------------------------------------------------------------------------------
/** The released figures of a finished (or resumed-to-the-end) run that go to TensorBoard. */
export interface TensorBoardFinal {
  evals: readonly { model: string; meanReward: number; ci95: number; evalRm?: { meanReward: number }; rouge?: { rougeL: number } }[];
  stageWallS: Readonly<Record<string, number>>;
  privacy: { differentiallyPrivate: boolean; stages: readonly { stage: string; dp: boolean; epsilon: number; batchesExecuted: number }[]; composed: { epsilon: number } };
  reward?: { heldOutAccuracy: number };
  rm?: { heldOutAccuracy: number };
}

export interface TensorBoardOptions {
  /** Also write statistics of private batches (--verbose-private), under private/. */
  verbosePrivate: boolean;
  /** False for non-private and reproducible runs: no epsilon is written. */
  differentiallyPrivate: boolean;
  delta: number;
  accountant: "prv" | "rdp";
  calibrator: Calibrator;
  log?: (line: string) => void;
}

/** The pipeline's TensorBoard hook: one event file per run, under DIR/<run directory's name>/. */
export class RunTensorBoard {
  readonly writer: EventFileWriter;
  constructor(root: string, runDir: string, private readonly o: TensorBoardOptions) {
    this.writer = new EventFileWriter(join(root, basename(runDir)));
    o.log?.(`tensorboard: released metrics to ${this.writer.path}${o.verbosePrivate ? "" : " (no private-batch statistics)"}`);
    if (o.verbosePrivate) o.log?.(`WARNING: --verbose-private: ${this.writer.path} also holds statistics of private batches (tags private/...); do not publish it`);
  }

  /** At a DP stage's commit point: epsilon of the mechanism the ledger accounts so far. */
  commit(plan: StagePlan, accounted: number): void {
    if (!plan.dp || !this.o.differentiallyPrivate) return;
    const eps = this.o.calibrator.epsilon({ q: plan.q, steps: accounted, sigma: plan.sigmaEffective, delta: this.o.delta, accountant: this.o.accountant });
    this.writer.scalar(`privacy/epsilon/${plan.stage}`, eps, accounted);
  }

  /** Statistics of a group of private batches: written only with --verbose-private. */
  privateMetrics(stage: string, step: number, metrics: Record<string, unknown>): void {
    if (!this.o.verbosePrivate) return;
    for (const [k, v] of Object.entries(metrics)) {
      if (typeof v === "number" && Number.isFinite(v)) this.writer.scalar(`private/${stage}/${k}`, v, step);
    }
  }

  final(s: TensorBoardFinal): void {
    const w = this.writer;
    s.evals.forEach((e) => {
      w.scalar(`eval/reward/${e.model}`, e.meanReward, 0);
      w.scalar(`eval/reward_ci95/${e.model}`, e.ci95, 0);
      if (e.evalRm) w.scalar(`eval/eval_rm_reward/${e.model}`, e.evalRm.meanReward, 0);
      if (e.rouge && Number.isFinite(e.rouge.rougeL)) w.scalar(`eval/rouge_l/${e.model}`, e.rouge.rougeL, 0);
    });
    if (s.reward) w.scalar("eval/reward_classifier_accuracy", s.reward.heldOutAccuracy, 0);
    if (s.rm) w.scalar("eval/dp_rm_accuracy", s.rm.heldOutAccuracy, 0);
    for (const [stage, sec] of Object.entries(s.stageWallS)) w.scalar(`time/wall_s/${stage}`, sec, 0);
    if (this.o.differentiallyPrivate && s.privacy.differentiallyPrivate) {
      for (const st of s.privacy.stages) if (st.dp) w.scalar(`privacy/epsilon/${st.stage}`, st.epsilon, st.batchesExecuted);
      w.scalar("privacy/epsilon/composed", s.privacy.composed.epsilon, 0);
    }
  }
}
