/**
 * The tensor batches of each loss, built from ragged token rows: the one place that names the
 * tensors a worker objective reads (py_runtime/dpalign_worker/engine/objectives.py is the other
 * side of this contract). Rows are padded to the longest; lengths travel beside them.
 */
import { Tensor, type TensorMap } from "../protocol/tensor.js";

export type Rows = readonly (readonly number[])[];

/** Tensor names of the worker's batches. */
export const T = {
  inputIds: "input_ids",
  lengths: "lengths",
  lossMask: "loss_mask",
  labels: "labels",
  chosenIds: "chosen_ids",
  chosenLengths: "chosen_lengths",
  rejectedIds: "rejected_ids",
  rejectedLengths: "rejected_lengths",
  queryIds: "query_ids",
  queryLengths: "query_lengths",
  responseIds: "response_ids",
  responseLengths: "response_lengths",
  oldLogprobs: "old_logprobs",
  oldValues: "old_values",
  advantages: "advantages",
  returns: "returns",
  logprobs: "logprobs",
  values: "values",
  canaryIndex: "canary_index",
  canaryScale: "canary_scale",
} as const;

export function idsBatch(rows: Rows, pad: number, ids: string = T.inputIds, lengths: string = T.lengths): TensorMap {
  return { [ids]: Tensor.paddedInt64(rows, pad), [lengths]: Tensor.int64(rows.map((r) => r.length)) };
}

/** causal_lm: every token after the first is a target. */
export function lmBatch(rows: Rows, pad: number): TensorMap {
  const b = idsBatch(rows, pad);
  const w = b[T.inputIds].shape[1];
  const mask = rows.map((r) => Array.from({ length: w }, (_, t) => (t >= 1 && t < r.length ? 1 : 0)));
  return { ...b, [T.lossMask]: Tensor.paddedFloat32(mask, 0, w) };
}

/** classification: token rows and a 0/1 label per row. */
export function classificationBatch(rows: Rows, labels: readonly number[], pad: number): TensorMap {
  return { ...idsBatch(rows, pad), [T.labels]: Tensor.int64(labels) };
}

/** pairwise_reward (Eq. 1): each example is one pair of whole sequences (prompt + response), the preferred one first. */
export function pairwiseBatch(chosen: Rows, rejected: Rows, pad: number): TensorMap {
  return { ...idsBatch(chosen, pad, T.chosenIds, T.chosenLengths), ...idsBatch(rejected, pad, T.rejectedIds, T.rejectedLengths) };
}

export function queryResponseBatch(queries: Rows, responses: Rows, pad: number): TensorMap {
  return { ...idsBatch(queries, pad, T.queryIds, T.queryLengths), ...idsBatch(responses, pad, T.responseIds, T.responseLengths) };
}

/** What a PPO step trains on, per example: its query, response, and the rollout's per-token quantities. */
export interface PpoRows {
  queries: Rows;
  responses: Rows;
  logprobs: Rows;
  values: Rows;
  advantages: Rows;
  returns: Rows;
}

/** ppo: the rows `idx` of a rollout. */
export function ppoBatch(r: PpoRows, idx: readonly number[], pad: number): TensorMap {
  const pick = <X>(xs: readonly X[]) => idx.map((i) => xs[i]);
  const b = queryResponseBatch(pick(r.queries), pick(r.responses), pad);
  const w = b[T.responseIds].shape[1];
  const f = (rows: Rows) => Tensor.paddedFloat32(pick(rows), 0, w);
  return { ...b, [T.oldLogprobs]: f(r.logprobs), [T.oldValues]: f(r.values), [T.advantages]: f(r.advantages), [T.returns]: f(r.returns) };
}
