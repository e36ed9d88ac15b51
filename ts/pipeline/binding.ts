/**
 * What binds a run directory to its inputs, so that a resume continues the same run: the config
 * (compared whole), the SHA-256 of each data file, and a digest of the private stage split. The
 * public part (config, public data files) is released in roles.json; the private train file's
 * hash and the split digest identify the private data set and live in private/binding.json only.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { RunDir } from "./run-dir.js";
import { ResumeMismatchError } from "./run-errors.js";

export const BINDING_FILE = "binding.json";

export interface DataFingerprint {
  train: string;
  test: string;
  unsup: string;
  /** The preference file of scenario reward-model. */
  preferences?: string;
}

export function fingerprintImdb(dataDir: string): DataFingerprint {
  const h = (f: string) => createHash("sha256").update(readFileSync(join(dataDir, "imdb", f))).digest("hex");
  return { train: h("train.jsonl.gz"), test: h("test.jsonl.gz"), unsup: h("unsup.jsonl.gz") };
}

interface Binding {
  data: DataFingerprint;
  roles: string;
}

/** Records the binding of a new run, or refuses a resume whose data or split differ, naming what. */
export function bindRun(run: RunDir, data: DataFingerprint, rolesDigest: string): void {
  const prev = run.readPrivateJson<Binding>(BINDING_FILE);
  if (!prev) {
    run.writePrivateJson(BINDING_FILE, { data, roles: rolesDigest } satisfies Binding);
    return;
  }
  for (const k of ["train", "test", "unsup"] as const) {
    if (prev.data?.[k] !== data[k]) {
      throw new ResumeMismatchError(`${run.dir} was started on another imdb/${k}.jsonl.gz (its SHA-256 differs): resume with the same --data-dir, or start a new --run-dir`);
    }
  }
  if (prev.data?.preferences !== data.preferences) {
    throw new ResumeMismatchError(`${run.dir} was started on another preference file (data.preferences.file; its SHA-256 differs): resume with the same data, or start a new --run-dir`);
  }
  if (prev.roles !== rolesDigest) {
    throw new ResumeMismatchError(`${run.dir}: the private stage split differs from the one the run started with (different data or key); resume with the same data, or start a new --run-dir`);
  }
}
