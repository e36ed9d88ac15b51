/**
 * The run directory. Released files (config, plan, public roles, the privacy ledger, privacy
 * report, evaluation on public prompts, checkpoints, report.md, summary.json) sit at the top;
 * everything that depends on which private records were used (metrics of private batches,
 * membership, the secret key, the worker's log) goes to `private/` (mode 0700, files 0600) and
 * never into a released file (DESIGN.md rule 9). Paths recorded inside the directory are relative
 * to it, so a run directory can be moved or copied. Stage markers make a run resumable.
 */
import { appendFileSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync, writeSync } from "node:fs";
import { dirname, isAbsolute, join, relative } from "node:path";
import { RunIntegrityError } from "./run-errors.js";
import { InvalidArgumentError } from "../util/errors.js";

export type StageName = "pretrain" | "reward" | "sft" | "rm" | "ppo" | "evaluate";

export const PRIVATE_DIR = "private";

const replacer = (_k: string, v: unknown) => (v === Infinity ? "inf" : typeof v === "bigint" ? v.toString() : v);
const reviver = (_k: string, v: unknown) => (v === "inf" ? Infinity : v);

export class RunDir {
  constructor(readonly dir: string) {
    if (existsSync(dir) && !statSync(dir).isDirectory()) {
      throw new InvalidArgumentError("--run-dir", `${dir} exists and is not a directory; pass a directory path`);
    }
    mkdirSync(dir, { recursive: true });
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** `p` relative to the run directory (what is recorded inside it). */
  rel(p: string): string {
    return isAbsolute(p) ? relative(this.dir, p) : p;
  }

  /** A recorded path resolved against the run directory (absolute paths, e.g. the cache, stay). */
  resolve(p: string): string {
    return p === "" || isAbsolute(p) ? p : this.path(p);
  }

  privatePath(name = ""): string {
    const dir = this.path(PRIVATE_DIR);
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
    return name ? join(dir, name) : dir;
  }

  checkpoint(stage: string, tag = "final"): string {
    return this.path("checkpoints", stage, tag);
  }

  writeJson(name: string, value: unknown): void {
    writeAtomic(this.path(name), JSON.stringify(value, replacer, 2) + "\n");
  }

  writePrivateJson(name: string, value: unknown): void {
    writeAtomic(this.privatePath(name), JSON.stringify(value, replacer, 2) + "\n", 0o600);
  }

  readJson<T>(name: string): T | undefined {
    return readJsonFile<T>(this.path(name));
  }

  readPrivateJson<T>(name: string): T | undefined {
    return readJsonFile<T>(this.path(PRIVATE_DIR, name));
  }

  appendJsonl(name: string, value: unknown): void {
    appendFileSync(this.path(name), JSON.stringify(value, replacer) + "\n");
  }

  appendPrivateJsonl(name: string, value: unknown): void {
    appendFileSync(this.privatePath(name), JSON.stringify(value, replacer) + "\n", { mode: 0o600 });
  }

  readJsonl<T>(name: string): T[] {
    return readJsonlFile<T>(this.path(name));
  }

  /** Metrics of private batches (losses, rewards, batch sizes, norms): private/metrics.jsonl only. */
  metric(stage: string, step: number, values: Record<string, unknown>): void {
    this.appendPrivateJsonl("metrics.jsonl", { stage, step, time: new Date().toISOString(), ...values });
  }

  stageResult<T>(stage: StageName): T | undefined {
    return this.readJson<T>(join("stages", `${stage}.json`));
  }

  markDone(stage: StageName, result: unknown): void {
    this.writeJson(join("stages", `${stage}.json`), { done: true, finishedAt: new Date().toISOString(), ...(result as object) });
  }

  isDone(stage: StageName): boolean {
    return existsSync(this.path("stages", `${stage}.json`));
  }
}

/** Writes through a temporary file and a rename, so a crash leaves the old or the new file, never half of one. */
export function writeAtomic(file: string, text: string, mode = 0o644): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, file);
}

/** Appends one line and fsyncs it before returning: the line survives a crash that follows. */
export function appendDurable(file: string, line: string): void {
  const fd = openSync(file, "a");
  try {
    writeSync(fd, line);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function damaged(file: string, what: string): RunIntegrityError {
  return new RunIntegrityError(`${file}: ${what}; the run directory is damaged: restore the file from a copy, or start again in a new --run-dir`);
}

export function readJsonFile<T>(file: string): T | undefined {
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, "utf8"), reviver) as T;
  } catch (e) {
    throw damaged(file, `not valid JSON (${(e as Error).message})`);
  }
}

export function readJsonlFile<T>(file: string): T[] {
  if (!existsSync(file)) return [];
  const out: T[] = [];
  readFileSync(file, "utf8").split("\n").forEach((l, i) => {
    if (!l.trim()) return;
    try {
      out.push(JSON.parse(l, reviver) as T);
    } catch {
      throw damaged(`${file}:${i + 1}`, "not a JSON line");
    }
  });
  return out;
}
