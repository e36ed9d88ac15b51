/**
 * Encodes Request envelopes and decodes Reply envelopes with protobufjs, reading the schema from
 * proto/ at run time (the .proto file is the one source of truth; the types of the messages are
 * generated from it, see ts/protocol/messages.ts). Tensor and TensorBatch fields are converted
 * between `Tensor`/`TensorMap` and wire form by walking the schema, so messages stay plain objects.
 *
 * A message is a list of ZeroMQ frames: [envelope, tensor bytes 1, tensor bytes 2, ...]. Each
 * Tensor in the envelope carries its dtype, shape and the index of its frame. Encoding hands each
 * tensor's own bytes to ZeroMQ as a frame (a view, no copy); decoding makes each tensor a typed
 * array over its received frame (no copy, unless the frame is misaligned for the dtype).
 */
import protobuf from "protobufjs";
import { join } from "node:path";
import { projectRoot } from "../util/python.js";
import { Tensor, isDType, type TensorMap } from "../protocol/tensor.js";
import type { ErrorCode, ErrorMessage, Heartbeat, Method, ReplyBodyOf, ReplyKind, RequestOf } from "../protocol/messages.js";

export const PROTO_FILE = join(projectRoot, "proto", "dpalign", "worker", "v1", "worker.proto");

const root = protobuf.loadSync(PROTO_FILE);
const RequestType = root.lookupType("dpalign.worker.v1.Request");
const ReplyType = root.lookupType("dpalign.worker.v1.Reply");
const TENSOR = "dpalign.worker.v1.Tensor";
const TENSOR_BATCH = "dpalign.worker.v1.TensorBatch";

/** The protocol version this control plane speaks (ProtocolVersion.PROTOCOL_VERSION_CURRENT). */
export const PROTOCOL_VERSION: number = root.lookupEnum("dpalign.worker.v1.ProtocolVersion").values.PROTOCOL_VERSION_CURRENT;

/** Names of Request.method's oneof fields in camelCase: the methods a client can call. */
export const METHODS = RequestType.oneofs.method.fieldsArray.map((f) => f.name) as readonly Method[];

/**
 * A message whose tensors do not match its frames, or an envelope with no result (a bug or a
 * version skew on the other side). `replyId` is the id of the reply it came in, when that parsed.
 */
export class TensorDecodeError extends Error {
  replyId?: number;
}

/** The frames of one message: index 0 is the envelope, tensor frames follow. */
export type Frames = readonly Uint8Array[];

function tensorToWire(t: Tensor, frames: Uint8Array[]): object {
  if (!(t instanceof Tensor)) throw new TypeError("expected a Tensor");
  frames.push(t.bytes());
  return { dtype: t.dtype, shape: t.shape.slice(), frame: frames.length - 1 };
}

function tensorFromWire(o: { dtype?: string; shape?: number[]; frame?: number }, name: string, frames: Frames): Tensor {
  const dtype = o.dtype ?? "";
  if (!isDType(dtype)) throw new TensorDecodeError(`${name}: unknown dtype ${JSON.stringify(dtype)}`);
  const shape = (o.shape ?? []).map(Number);
  const index = o.frame ?? 0;
  if (index < 1 || index >= frames.length) {
    throw new TensorDecodeError(`${name}: refers to frame ${index}, but the message has ${frames.length - 1} tensor frame(s)`);
  }
  try {
    return Tensor.fromBytes(dtype, shape, frames[index]);
  } catch (e) {
    throw new TensorDecodeError(`${name}: frame ${index}: ${(e as Error).message}`);
  }
}

/** Walks a plain object of protobuf type `type`, converting tensor fields to wire form. */
function toWire(type: protobuf.Type, value: Record<string, unknown>, frames: Uint8Array[]): Record<string, unknown> {
  if (type.fullName === `.${TENSOR_BATCH}`) return batchToWire(value as TensorMap, frames) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const field = type.fields[key];
    if (field === undefined) throw new TypeError(`${type.name} has no field ${key}`);
    if (v === undefined || v === null) continue;
    const rt = field.resolve().resolvedType;
    if (rt instanceof protobuf.Type) {
      if (rt.fullName === `.${TENSOR}`) out[key] = tensorToWire(v as Tensor, frames);
      else if (rt.fullName === `.${TENSOR_BATCH}`) out[key] = batchToWire(v as TensorMap, frames);
      else if (field.map) out[key] = Object.fromEntries(Object.entries(v as object).map(([k, x]) => [k, toWire(rt, x as Record<string, unknown>, frames)]));
      else if (field.repeated) out[key] = (v as Record<string, unknown>[]).map((x) => toWire(rt, x, frames));
      else out[key] = toWire(rt, v as Record<string, unknown>, frames);
    } else {
      out[key] = v;
    }
  }
  return out;
}

function batchToWire(m: TensorMap, frames: Uint8Array[]): object {
  return { tensors: Object.fromEntries(Object.entries(m).map(([k, t]) => [k, tensorToWire(t, frames)])) };
}

function fromWire(type: protobuf.Type, value: Record<string, unknown>, frames: Frames): unknown {
  if (type.fullName === `.${TENSOR_BATCH}`) {
    const tensors = (value.tensors ?? {}) as Record<string, object>;
    return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, tensorFromWire(t, k, frames)]));
  }
  if (type.fullName === `.${TENSOR}`) return tensorFromWire(value, "tensor", frames);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const field = type.fields[key];
    const rt = field?.resolve().resolvedType;
    if (field && rt instanceof protobuf.Type && v !== null && v !== undefined) {
      if (field.map) out[key] = Object.fromEntries(Object.entries(v as object).map(([k, x]) => [k, fromWire(rt, x, frames)]));
      else if (field.repeated) out[key] = (v as Record<string, unknown>[]).map((x) => fromWire(rt, x, frames));
      else out[key] = fromWire(rt, v as Record<string, unknown>, frames);
    } else {
      out[key] = v;
    }
  }
  return out;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, enums: String, defaults: true, arrays: true, objects: true, oneofs: true };

/** Encodes a Request as frames: [envelope, ...the bytes of each tensor in it (views, not copies)]. */
export function encodeRequest<M extends Method>(id: number, method: M, body: RequestOf<M>): Uint8Array[] {
  const field = RequestType.fields[method];
  if (field === undefined || field.partOf !== RequestType.oneofs.method) {
    throw new TypeError(`unknown worker method ${JSON.stringify(method)}; known: ${METHODS.join(", ")}`);
  }
  const rt = field.resolve().resolvedType as protobuf.Type;
  const frames: Uint8Array[] = [EMPTY];
  const wire = { id, [method]: toWire(rt, body as Record<string, unknown>, frames) };
  frames[0] = RequestType.encode(RequestType.fromObject(wire)).finish();
  return frames;
}

const EMPTY = new Uint8Array(0);

export type DecodedReply =
  | { id: number; kind: "heartbeat"; heartbeat: Heartbeat }
  | { id: number; kind: "error"; error: ErrorMessage }
  | { id: number; kind: "result"; method: string; result: unknown; handlerS: number };

/**
 * Decodes a Reply from its frames (a single Uint8Array: an envelope without tensor frames).
 * Throws on an envelope that does not parse or names no result, and TensorDecodeError on tensors
 * that do not match their frames.
 */
export function decodeReply(message: Frames | Uint8Array): DecodedReply {
  const frames: Frames = message instanceof Uint8Array ? [message] : message;
  const msg = ReplyType.decode(frames[0]);
  const obj = ReplyType.toObject(msg, TO_OBJECT) as Record<string, unknown> & { id: number; result?: string; handlerS?: number };
  const which = obj.result;
  if (which === undefined) {
    const e = new TensorDecodeError("reply carries no result (a newer worker?)");
    e.replyId = obj.id;
    throw e;
  }
  if (which === "heartbeat") return { id: obj.id, kind: "heartbeat", heartbeat: obj.heartbeat as never };
  if (which === "error") {
    const e = obj.error as ErrorMessage;
    return { id: obj.id, kind: "error", error: { code: e.code, message: e.message, details: e.details ?? {} } };
  }
  const field = ReplyType.fields[which];
  const rt = field.resolve().resolvedType as protobuf.Type;
  try {
    return { id: obj.id, kind: "result", method: which, result: fromWire(rt, obj[which] as Record<string, unknown>, frames), handlerS: Number(obj.handlerS ?? 0) };
  } catch (e) {
    if (e instanceof TensorDecodeError) e.replyId = obj.id;
    throw e;
  }
}

/** A Reply as the worker would send it (for tests and fake workers): [envelope, ...tensor frames]. */
export function encodeReply<K extends ReplyKind>(id: number, method: K, body: ReplyBodyOf<K>): Uint8Array[] {
  const rt = ReplyType.fields[method].resolve().resolvedType as protobuf.Type;
  const frames: Uint8Array[] = [EMPTY];
  frames[0] = ReplyType.encode(ReplyType.fromObject({ id, [method]: toWire(rt, body as Record<string, unknown>, frames) })).finish();
  return frames;
}

/** A typed error Reply (for tests and fake workers). */
export function encodeErrorReply(id: number, code: ErrorCode, message: string, details: Record<string, string> = {}): Uint8Array {
  return ReplyType.encode(ReplyType.fromObject({ id, error: { code, message, details } })).finish();
}

/** A Request envelope decoded to a plain object, tensors resolved against its frames (for fake workers). */
export function decodeRequest(frames: Frames): { id: number; method: Method; body: Record<string, unknown> } {
  const obj = RequestType.toObject(RequestType.decode(frames[0]), TO_OBJECT) as Record<string, unknown> & { id: number; method?: string };
  const method = obj.method as Method | undefined;
  if (method === undefined) throw new TensorDecodeError("request names no method");
  const rt = RequestType.fields[method].resolve().resolvedType as protobuf.Type;
  return { id: obj.id, method, body: fromWire(rt, obj[method] as Record<string, unknown>, frames) as Record<string, unknown> };
}
