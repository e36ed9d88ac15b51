/**
 * The run's secret key (DESIGN.md rule 7). Everything that decides which private records are
 * used (the stage split, Poisson samples, prompt cuts and generation seeds of private prompts)
 * and the noise seed of reproducible runs are derived from one 256-bit key. In the default mode
 * the key comes from the OS's CSPRNG at run start and is kept only in `private/secret.json`
 * (mode 0600) so that a resumed run redraws the same future; it never enters a released file.
 * With `privacy.reproducible` the key is a hash of the public run seed: anyone can recompute the
 * run's samples, so such a run is reported as not private.
 */
import { createHash, randomBytes } from "node:crypto";
import { KeyedRng } from "../util/keyed-rng.js";
import { ResumeMismatchError } from "./run-errors.js";
import type { RunDir } from "./run-dir.js";

export const SECRET_FILE = "secret.json";

export type SecretMode = "secure" | "reproducible";

export interface RunSecret {
  mode: SecretMode;
  /** The root generator; use `fork(label)` for each purpose so streams stay independent. */
  rng: KeyedRng;
}

interface SecretFile {
  version: 1;
  mode: SecretMode;
  key: string;
  createdAt: string;
}

/** The key of a reproducible run: a public function of the seed. */
export function reproducibleKey(seed: number): Buffer {
  return createHash("sha256").update(`dpalign/reproducible/${seed}`).digest();
}

/**
 * Loads the run's secret, or draws one for a new run. `hasProgress` says whether the run
 * directory already holds executed batches: then a missing secret is refused, because a fresh key
 * would assign records to other stages than the batches already run.
 */
export function openRunSecret(run: RunDir, reproducible: boolean, seed: number, hasProgress: boolean): RunSecret {
  const mode: SecretMode = reproducible ? "reproducible" : "secure";
  const prev = run.readPrivateJson<SecretFile>(SECRET_FILE);
  if (prev) {
    if (prev.mode !== mode || !/^[0-9a-f]{64}$/.test(prev.key ?? "")) {
      throw new ResumeMismatchError(`${run.privatePath(SECRET_FILE)} does not match this run (mode ${prev.mode}, expected ${mode}); the run directory was made by another configuration: use a new --run-dir`);
    }
    const key = Buffer.from(prev.key, "hex");
    if (mode === "reproducible" && !key.equals(reproducibleKey(seed))) {
      throw new ResumeMismatchError(`${run.privatePath(SECRET_FILE)} was made with another seed; use a new --run-dir`);
    }
    return { mode, rng: new KeyedRng(key) };
  }
  if (hasProgress) {
    throw new ResumeMismatchError(
      `${run.privatePath(SECRET_FILE)} is missing but ${run.dir} already holds executed batches: without the run's secret key the stage split and the remaining samples cannot be redrawn. Start again in a new --run-dir`,
    );
  }
  const key = reproducible ? reproducibleKey(seed) : randomBytes(32);
  run.writePrivateJson(SECRET_FILE, { version: 1, mode, key: key.toString("hex"), createdAt: new Date().toISOString() } satisfies SecretFile);
  return { mode, rng: new KeyedRng(key) };
}
