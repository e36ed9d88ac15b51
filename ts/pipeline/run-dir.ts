/**
 * The run directory: resolved config, plan, roles, privacy ledger (JSON lines, append-only),
 * metrics (JSON lines), per-stage completion markers, checkpoints, samples and the report.
 * Stage markers make a run resumable: a completed stage is skipped, an interrupted one resumes
 * from its last checkpoint.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type StageName = "pretrain" | "reward" | "sft" | "ppo" | "evaluate";

export class RunDir {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  checkpoint(stage: string, tag = "final"): string {
    return this.path("checkpoints", stage, tag);
  }

  writeJson(name: string, value: unknown): void {
    const file = this.path(name);
    mkdirSync(join(file, ".."), { recursive: true });
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, JSON.stringify(value, (_k, v) => (v === Infinity ? "inf" : typeof v === "bigint" ? v.toString() : v), 2) + "\n");
    renameSync(tmp, file);
  }

  readJson<T>(name: string): T | undefined {
    const file = this.path(name);
    if (!existsSync(file)) return undefined;
    return JSON.parse(readFileSync(file, "utf8"), (_k, v) => (v === "inf" ? Infinity : v)) as T;
  }

  appendJsonl(name: string, value: unknown): void {
    appendFileSync(this.path(name), JSON.stringify(value, (_k, v) => (v === Infinity ? "inf" : v)) + "\n");
  }

  readJsonl<T>(name: string): T[] {
    const file = this.path(name);
    if (!existsSync(file)) return [];
    return readFileSync(file, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as T);
  }

  metric(stage: string, step: number, values: Record<string, unknown>): void {
    this.appendJsonl("metrics.jsonl", { stage, step, time: new Date().toISOString(), ...values });
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
