import { createHash } from "node:crypto";

/**
 * A digest of a sampled batch's membership (indices into the stage's private data). It goes to
 * private/metrics.jsonl only: it lets a test check that released files do not determine the samples.
 */
export function membersDigest(indices: readonly number[]): string {
  return createHash("sha256").update(indices.join(",")).digest("hex").slice(0, 32);
}
