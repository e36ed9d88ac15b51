/**
 * Encodes Request envelopes and decodes Reply envelopes with protobufjs, reading the schema from
 * proto/ at run time (the .proto file is the one source of truth; nothing is generated on this
 * side). Tensor and TensorBatch fields are converted between `Tensor`/`TensorMap` and wire form by
 * walking the schema, so message shapes in messages.ts stay plain objects.
 */
import protobuf from "protobufjs";
import { join } from "node:path";
import { projectRoot } from "../util/python.js";
import { Tensor, isDType, type TensorMap } from "./tensor.js";
import type { ErrorMessage, Method } from "./messages.js";

export const PROTO_FILE = join(projectRoot, "proto", "dpalign", "worker", "v1", "worker.proto");

const root = protobuf.loadSync(PROTO_FILE);
const RequestType = root.lookupType("dpalign.worker.v1.Request");
const ReplyType = root.lookupType("dpalign.worker.v1.Reply");
const TENSOR = "dpalign.worker.v1.Tensor";
const TENSOR_BATCH = "dpalign.worker.v1.TensorBatch";

/** The protocol version this control plane speaks (ProtocolVersion.PROTOCOL_VERSION_CURRENT). */
export const PROTOCOL_VERSION: number = root.lookupEnum("dpalign.worker.v1.ProtocolVersion").values.PROTOCOL_VERSION_CURRENT;

/** Names of Request.method's oneof fields in camelCase: the methods a client can call. */
export const METHODS: readonly string[] = RequestType.oneofs.method.fieldsArray.map((f) => f.name);

export class TensorDecodeError extends Error {}

function tensorToWire(t: Tensor): object {
  if (!(t instanceof Tensor)) throw new TypeError("expected a Tensor");
  return { dtype: t.dtype, shape: t.shape.slice(), data: t.bytes() };
}

function tensorFromWire(o: { dtype?: string; shape?: number[]; data?: Uint8Array }, name: string): Tensor {
  const dtype = o.dtype ?? "";
  if (!isDType(dtype)) throw new TensorDecodeError(`${name}: unknown dtype ${JSON.stringify(dtype)}`);
  const shape = (o.shape ?? []).map(Number);
  try {
    return Tensor.fromBytes(dtype, shape, o.data ?? new Uint8Array());
  } catch (e) {
    throw new TensorDecodeError(`${name}: ${(e as Error).message}`);
  }
}

/** Walks a plain object of protobuf type `type`, converting tensor fields to wire form. */
function toWire(type: protobuf.Type, value: Record<string, unknown>): Record<string, unknown> {
  if (type.fullName === `.${TENSOR_BATCH}`) return batchToWire(value as TensorMap) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const field = type.fields[key];
    if (field === undefined) throw new TypeError(`${type.name} has no field ${key}`);
    if (v === undefined || v === null) continue;
    const rt = field.resolve().resolvedType;
    if (rt instanceof protobuf.Type) {
      if (rt.fullName === `.${TENSOR}`) out[key] = tensorToWire(v as Tensor);
      else if (rt.fullName === `.${TENSOR_BATCH}`) out[key] = batchToWire(v as TensorMap);
      else if (field.map) out[key] = Object.fromEntries(Object.entries(v as object).map(([k, x]) => [k, toWire(rt, x as Record<string, unknown>)]));
      else if (field.repeated) out[key] = (v as Record<string, unknown>[]).map((x) => toWire(rt, x));
      else out[key] = toWire(rt, v as Record<string, unknown>);
    } else {
      out[key] = v;
    }
  }
  return out;
}

function batchToWire(m: TensorMap): object {
  return { tensors: Object.fromEntries(Object.entries(m).map(([k, t]) => [k, tensorToWire(t)])) };
}

function fromWire(type: protobuf.Type, value: Record<string, unknown>): unknown {
  if (type.fullName === `.${TENSOR_BATCH}`) {
    const tensors = (value.tensors ?? {}) as Record<string, object>;
    return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, tensorFromWire(t, k)]));
  }
  if (type.fullName === `.${TENSOR}`) return tensorFromWire(value, "tensor");
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const field = type.fields[key];
    const rt = field?.resolve().resolvedType;
    if (field && rt instanceof protobuf.Type && v !== null && v !== undefined) {
      if (field.map) out[key] = Object.fromEntries(Object.entries(v as object).map(([k, x]) => [k, fromWire(rt, x)]));
      else if (field.repeated) out[key] = (v as Record<string, unknown>[]).map((x) => fromWire(rt, x));
      else out[key] = fromWire(rt, v as Record<string, unknown>);
    } else {
      out[key] = v;
    }
  }
  return out;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, enums: String, defaults: true, arrays: true, objects: true, oneofs: true };

export function encodeRequest(id: number, method: Method | string, body: object): Uint8Array {
  const field = RequestType.fields[method];
  if (field === undefined || field.partOf !== RequestType.oneofs.method) {
    throw new TypeError(`unknown worker method ${JSON.stringify(method)}; known: ${METHODS.join(", ")}`);
  }
  const rt = field.resolve().resolvedType as protobuf.Type;
  const wire = { id, [method]: toWire(rt, body as Record<string, unknown>) };
  return RequestType.encode(RequestType.fromObject(wire)).finish();
}

export type DecodedReply =
  | { id: number; kind: "heartbeat"; heartbeat: { sequence: number; inFlight: number; uptimeS: number } }
  | { id: number; kind: "error"; error: ErrorMessage }
  | { id: number; kind: "result"; method: string; result: unknown };

/** Decodes a Reply; throws on bytes that do not parse (the caller logs and drops them). */
export function decodeReply(bytes: Uint8Array): DecodedReply {
  const msg = ReplyType.decode(bytes);
  const obj = ReplyType.toObject(msg, TO_OBJECT) as Record<string, unknown> & { id: number; result?: string };
  const which = obj.result;
  if (which === undefined) throw new TensorDecodeError("reply carries no result (a newer worker?)");
  if (which === "heartbeat") return { id: obj.id, kind: "heartbeat", heartbeat: obj.heartbeat as never };
  if (which === "error") {
    const e = obj.error as ErrorMessage;
    return { id: obj.id, kind: "error", error: { code: e.code, message: e.message, details: e.details ?? {} } };
  }
  const field = ReplyType.fields[which];
  const rt = field.resolve().resolvedType as protobuf.Type;
  return { id: obj.id, kind: "result", method: which, result: fromWire(rt, obj[which] as Record<string, unknown>) };
}

/** For tests: a Reply as the worker would send it. */
export function encodeReplyForTest(id: number, method: string, body: object): Uint8Array {
  const rt = ReplyType.fields[method].resolve().resolvedType as protobuf.Type;
  return ReplyType.encode(ReplyType.fromObject({ id, [method]: toWire(rt, body as Record<string, unknown>) })).finish();
}
