/** Token rows (ragged number[][]): tokenisation budgets and prompt cuts. Batches are built in ts/worker/batches.ts. */
import type { WorkerModel } from "../worker/roles.js";
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

/** Tokenizes in chunks (each text cut to a character budget first); returns one row of ids per text. */
export async function tokenizeRows(model: WorkerModel, texts: readonly string[], maxTokens: number, chunk = 2000): Promise<number[][]> {
  return model.tokenize(texts.map((x) => headChars(x, maxTokens)), maxTokens, chunk);
}

/** Prompt prefixes: row i cut to a length drawn uniformly from [min, max] (fixed by the rng). */
export function cutPrompts(rows: readonly (readonly number[])[], [min, max]: readonly [number, number], rng: Rng): number[][] {
  return rows.map((r) => r.slice(0, Math.min(r.length, min + rng.int(max - min + 1))));
}
