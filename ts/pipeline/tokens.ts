/** Token rows (ragged number[][]) to and from the worker's padded int64 batches. */
import { Tensor, type TensorMap } from "../transport/tensor.js";
import type { WorkerApi } from "../worker/api.js";
import type { Rng } from "../util/rng.js";

/**
 * Cuts a text to a character budget before tokenisation (tokenising whole reviews to keep their
 * first few tokens is wasted work): ~10 characters per token is a generous upper bound.
 */
export function headChars(text: string, tokens: number): string {
  return tokens > 0 ? text.slice(0, tokens * 10) : text;
}
export function tailChars(text: string, tokens: number): string {
  return tokens > 0 ? text.slice(-tokens * 10) : text;
}

/** Tokenizes in chunks; returns one row of ids per text. */
export async function tokenizeRows(api: WorkerApi, handle: string, texts: readonly string[], maxTokens: number, chunk = 2000): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < texts.length; i += chunk) {
    const t = await api.tokenize({ handle, texts: texts.slice(i, i + chunk).map((x) => headChars(x, maxTokens)), maxTokens });
    const lengths = t.lengths.toNumbers();
    out.push(...t.input_ids.rows(lengths));
  }
  return out;
}

export function idsBatch(rows: readonly (readonly number[])[], pad: number, ids = "input_ids", lengths = "lengths"): TensorMap {
  return { [ids]: Tensor.paddedInt64(rows, pad), [lengths]: Tensor.int64(rows.map((r) => r.length)) };
}

/** causal_lm batch: every token after the first is a target. */
export function lmBatch(rows: readonly (readonly number[])[], pad: number): TensorMap {
  const b = idsBatch(rows, pad);
  const w = b.input_ids.shape[1];
  const mask = rows.map((r) => Array.from({ length: w }, (_, t) => (t >= 1 && t < r.length ? 1 : 0)));
  return { ...b, loss_mask: Tensor.paddedFloat32(mask, 0, w) };
}

/** Prompt prefixes: row i cut to a length drawn uniformly from [min, max] (fixed by the rng). */
export function cutPrompts(rows: readonly (readonly number[])[], [min, max]: readonly [number, number], rng: Rng): number[][] {
  return rows.map((r) => r.slice(0, Math.min(r.length, min + rng.int(max - min + 1))));
}

/** Rows of a generate / score reply, cut to their lengths. */
export function replyRows(batch: TensorMap, name: string, lengths: readonly number[]): number[][] {
  return batch[name].rows(lengths);
}
