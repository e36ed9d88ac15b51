/**
 * The camelCase request and reply types of the worker protocol, derived from the types generated
 * from proto/ (generated/worker.d.ts, by scripts/gen-proto-ts.mjs): nothing here repeats a field.
 * The derivation changes only what the codec changes on the way (ts/transport/codec.ts):
 *  - a `Tensor` field is a `Tensor` and a `TensorBatch` field a `TensorMap` (tensors travel as
 *    frames of their own, see tensor.ts);
 *  - an enum field is its value's name as a string (the codec decodes enums as names);
 *  - `null` is dropped: a request leaves a field out instead.
 * Requests (`In<...>`) have every field optional, as proto3 does; replies (`Out<...>`) have every
 * field present, because the codec decodes with defaults (a message field the worker did not set
 * would be null: the worker sets the ones a reply documents).
 */
import type { dpalign } from "./generated/worker.js";
import type { Tensor, TensorMap } from "./tensor.js";

type Pb = typeof dpalign.worker.v1;
type Wire<N extends keyof Pb> = Pb[N];

/** The enums of the schema, by name: each maps to the union of its value names. */
type EnumNames = { [K in keyof Pb as Pb[K] extends abstract new (...args: never) => unknown ? never : K]: Extract<keyof Pb[K], string> };

type ExactKeys<T, K> = [keyof T] extends [K] ? ([K] extends [keyof T] ? true : false) : false;
// `number` is assignable to a numeric enum, so tell them apart by their template-literal forms.
type IsEnum<F> = [F] extends [number] ? (`${number}` extends `${F}` ? false : true) : false;

/** The name of the enum whose values F has (F: a generated enum type). */
type EnumOf<F> = { [K in keyof EnumNames]: [F] extends [Wire<K>[keyof Wire<K>]] ? ([Wire<K>[keyof Wire<K>]] extends [F] ? K : never) : never }[keyof EnumNames];

// The enum test comes first: the others distribute over unions, and an enum is a union of its values.
type Value<F, Dir> =
  IsEnum<F> extends true ? EnumNames[EnumOf<F>] :
  F extends readonly (infer E)[] ? Value<NonNullable<E>, Dir>[] :
  F extends Uint8Array ? Uint8Array :
  F extends string | number | boolean ? F :
  ExactKeys<F, "tensors"> extends true ? TensorMap :
  ExactKeys<F, "dtype" | "shape" | "frame"> extends true ? Tensor :
  F extends { [k: string]: infer V } ? (string extends keyof F ? Record<string, Value<NonNullable<V>, Dir>> : Message<F, Dir>) :
  Message<F, Dir>;

type Message<T, Dir> = Dir extends "in"
  ? { [K in keyof T]?: Value<NonNullable<T[K]>, Dir> }
  : { [K in keyof T]-?: Value<NonNullable<T[K]>, Dir> };

/** A message as the control plane writes it in a request (every field optional). */
export type In<T> = Value<T, "in">;
/** A message as the control plane reads it from a reply (every field present). */
export type Out<T> = Value<T, "out">;

type V1 = dpalign.worker.v1.IRequest;
type R1 = dpalign.worker.v1.IReply;

/** The methods a client can call: the names of Request.method's oneof fields, in camelCase. */
export type Method = Exclude<keyof V1, "id">;
export type RequestOf<M extends Method> = In<NonNullable<V1[M]>>;
export type ReplyOf<M extends Method> = Out<NonNullable<R1[M]>>;
/** The results a Reply can carry: a method's, or `error` and `heartbeat`. */
export type ReplyKind = Exclude<keyof R1, "id">;
/** A reply's result as a worker writes it (every field optional): for fake workers and tests. */
export type ReplyBodyOf<K extends ReplyKind> = In<NonNullable<R1[K]>>;

// Names for the messages code outside the transport refers to.
export type ErrorMessage = Out<dpalign.worker.v1.IError>;
export type ErrorCode = EnumNames["ErrorCode"];
export type HandshakeRequest = RequestOf<"handshake">;
export type HandshakeReply = ReplyOf<"handshake">;
export type Capabilities = Out<dpalign.worker.v1.ICapabilities>;
export type Heartbeat = Out<dpalign.worker.v1.IHeartbeat>;
export type ModelSpec = In<dpalign.worker.v1.IModelSpec>;
export type OptimizerSpec = In<dpalign.worker.v1.IOptimizerSpec>;
export type ModelInfo = ReplyOf<"loadModel">;
export type DpSpec = In<dpalign.worker.v1.IDpSpec>;
export type TrainStepRequest = RequestOf<"trainStep">;
export type TrainStepReply = ReplyOf<"trainStep">;
export type GenerateReply = ReplyOf<"generate">;
export type CheckpointInfo = ReplyOf<"saveCheckpoint">;
