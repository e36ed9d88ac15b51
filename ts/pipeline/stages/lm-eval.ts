/**
 * Held-out language-model loss of a loaded model on public text: the pretrained model's perplexity
 * on held-out unsup reviews, and the SFT model's loss on public reviews of the private
 * distribution before and after DP-SFT. Only public text is ever scored here, so the figures are
 * releasable (of a DP model they are post-processing).
 */
import type { WorkerApi } from "../../worker/api.js";
import { Reference } from "../../worker/roles.js";

export interface HeldOutLm {
  /** Texts scored (those with at least two tokens). */
  texts: number;
  /** Tokens predicted: every token of a text after its first (the first has no context to be predicted from). */
  tokens: number;
  /** Whitespace-separated words in the predicted part of the texts. */
  words: number;
  /** Mean negative log-likelihood per predicted token (nats). */
  loss: number;
  /** exp(loss): perplexity per token of this tokenizer. */
  perplexity: number;
  /** exp(total NLL / words): per word, so models with different tokenizers compare on the same text. */
  wordPerplexity: number;
}

/** Mean NLL over token rows, each row predicted token by token from its own start (as causal-LM training does). */
export async function heldOutLm(api: WorkerApi, handle: string, rows: readonly (readonly number[])[], pad: number): Promise<HeldOutLm> {
  const scored = rows.filter((r) => r.length >= 2);
  const model = new Reference(api, handle);
  const responses = scored.map((r) => r.slice(1));
  const lps = await model.logprobs(scored.map((r) => r.slice(0, 1)), responses, pad);
  let nll = 0;
  let tokens = 0;
  lps.forEach((row, i) => {
    for (let t = 0; t < responses[i].length; t++) nll -= row[t];
    tokens += responses[i].length;
  });
  const texts = await model.decode(responses, pad);
  const words = texts.reduce((a, s) => a + countWords(s), 0);
  const loss = tokens ? nll / tokens : NaN;
  return { texts: scored.length, tokens, words, loss, perplexity: Math.exp(loss), wordPerplexity: words ? Math.exp(nll / words) : NaN };
}

export function countWords(s: string): number {
  const t = s.trim();
  return t ? t.split(/\s+/).length : 0;
}

/** The first `n` words of a text: held-out texts cut to the same words whatever the tokenizer. */
export function firstWords(s: string, n: number): string {
  return s.trim().split(/\s+/).slice(0, n).join(" ");
}
