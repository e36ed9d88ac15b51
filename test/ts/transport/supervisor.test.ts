/**
 * ProcessSupervisor alone, on small Node scripts that exit, write to stderr or ignore signals.
 */
import { describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProcessSupervisor } from "../../../ts/transport/supervisor.js";

const node = (script: string, extra: Partial<Parameters<typeof ProcessSupervisor.start>[0]> = {}) =>
  ProcessSupervisor.start({ command: process.execPath, args: ["-e", script], ...extra });

/** A script that ignores SIGTERM and SIGINT, says so on stderr, and runs until killed. */
const STUBBORN = `process.on("SIGTERM", () => {}); process.on("SIGINT", () => {}); console.error("ready"); setInterval(() => {}, 1000);`;

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("ProcessSupervisor", () => {
  it("reports the exit code once and keeps the last stderr lines", async () => {
    const lines: string[] = [];
    const sup = node(`for (let i = 1; i <= 20; i++) console.error("line " + i); process.stderr.write("no newline"); process.exit(3);`, {
      stderrLines: 5,
      onStderr: (l) => lines.push(l),
    });
    expect(sup.pid).toBeGreaterThan(0);
    const seen: unknown[] = [];
    sup.onExit((i) => seen.push(i));
    const info = await sup.exited;
    expect(info).toEqual({ code: 3, signal: null });
    expect(sup.running).toBe(false);
    expect(sup.stderrTail(3)).toEqual(["line 19", "line 20", "no newline"]);
    expect(sup.stderrTail(100)).toHaveLength(5); // the ring buffer keeps 5
    expect(lines).toHaveLength(21);
    expect(sup.stderrHint(2)).toBe("\nworker stderr (last lines):\n  line 20\n  no newline");
    const late: unknown[] = [];
    sup.onExit((i) => late.push(i)); // after the fact: still called, once
    await new Promise((r) => setTimeout(r, 10));
    expect(seen).toEqual([info]);
    expect(late).toEqual([info]);
  });

  it("reports a program that cannot be started", async () => {
    const sup = ProcessSupervisor.start({ command: "/nonexistent/python3", args: [] });
    const info = await sup.exited;
    expect(info.spawnError?.code).toBe("ENOENT");
    expect(sup.running).toBe(false);
    await expect(sup.stop(100)).resolves.toBe(info);
  });

  it("lets a child exit on its own within the grace period", async () => {
    const sup = node(`console.error("bye"); setTimeout(() => process.exit(0), 150);`);
    const t0 = Date.now();
    const info = await sup.stop(5_000);
    expect(info).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(4_000);
  });

  it("SIGKILLs a child that ignores signals once the grace period is over", async () => {
    const sup = node(STUBBORN);
    await waitFor(() => sup.stderrTail().includes("ready"));
    sup.kill("SIGTERM");
    sup.kill("SIGINT");
    await new Promise((r) => setTimeout(r, 200));
    expect(sup.running).toBe(true);
    const t0 = Date.now();
    const info = await sup.stop(300);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(info).toEqual({ code: null, signal: "SIGKILL" });
    expect(alive(sup.pid!)).toBe(false);
  });

  it("removes its cleanup file when stopped", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "dpalign-sup-")), "w.sock");
    const sup = node(`require("fs").writeFileSync(${JSON.stringify(file)}, ""); console.error("ready"); setInterval(() => {}, 1000);`, { cleanupFile: file });
    await waitFor(() => sup.stderrTail().includes("ready"));
    expect(existsSync(file)).toBe(true);
    await sup.stop(0);
    expect(existsSync(file)).toBe(false);
  });

  it("removes the file and stops the child when this process exits without stopping it", async () => {
    // A throwaway Node process supervises an ordinary child, then exits without stopping it.
    const file = join(mkdtempSync(join(tmpdir(), "dpalign-sup-")), "w.sock");
    writeFileSync(file, "");
    const script = `
      const { ProcessSupervisor } = await import(${JSON.stringify(new URL("../../../dist/transport/supervisor.js", import.meta.url).href)});
      const sup = ProcessSupervisor.start({ command: process.execPath, args: ["-e", "console.error('ready'); setInterval(() => {}, 1000)"], cleanupFile: ${JSON.stringify(file)} });
      sup.onExit(() => {});
      const wait = () => sup.stderrTail().includes("ready") ? (console.log(sup.pid), process.exit(0)) : setTimeout(wait, 20);
      wait();`;
    const parent = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    const childPid = await new Promise<number>((resolve) => parent.stdout!.once("data", (d) => resolve(Number(String(d).trim()))));
    await new Promise((r) => parent.once("exit", r));
    expect(childPid).toBeGreaterThan(0);
    expect(existsSync(file)).toBe(false);
    await waitFor(() => !alive(childPid), 5_000);
  });
});
