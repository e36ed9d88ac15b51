/**
 * `dpalign run` / `doctor` against a worker started by hand (`dpalign worker --endpoint tcp://...
 * --keys DIR`) with --worker-endpoint / --worker-keys, through the built CLI as a user runs it
 * (`npm run build` first): a tiny pipeline completes on the remote worker, which then serves the
 * next control plane; a busy worker, an unreachable endpoint and wrong keys each end in one
 * `dpalign:` line and a non-zero exit, never a hang.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WorkerClient } from "../../../ts/transport/client.js";
import { keygen as keygenDir } from "../../../ts/transport/curve.js";
import { TINY, writeTinyImdb } from "../pipeline/helpers.js";
import { bin, freePort, keygen, root, startHandWorker, tmp, type HandWorker } from "../transport/remote-helpers.js";

interface Result { status: number | null; signal: string | null; stdout: string; stderr: string }

function dpalign(args: string[], timeout = 60_000): Result {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, encoding: "utf8", timeout, env: { ...process.env, DPALIGN_DATA_DIR: "" } });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** The CLI asynchronously: the test process must stay responsive (it holds a worker session in one test). */
function dpalignAsync(args: string[], timeout = 240_000): Promise<Result> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [bin, ...args], { cwd: root, env: { ...process.env, DPALIGN_DATA_DIR: "" } });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeout);
    p.on("close", (status, signal) => {
      clearTimeout(timer);
      res({ status, signal, stdout, stderr });
    });
  });
}

/** One clear user error: not 0, not 70 (internal), one `dpalign:` line matching `message`, no stack. */
function expectUserError(r: Result, message: RegExp): void {
  const shown = `exit ${r.status} (signal ${r.signal})\nstderr:\n${r.stderr}`;
  expect(r.signal, shown).toBeNull();
  expect(r.status, shown).not.toBe(0);
  expect(r.status, shown).not.toBe(70);
  expect(r.stderr, shown).not.toMatch(/^\s+at /m);
  expect(r.stderr.match(/^dpalign: /gm), shown).toHaveLength(1);
  expect(r.stderr, shown).toMatch(message);
}

let keys: string;
let keygenText: string;
let worker: HandWorker;
const work = tmp("dpalign-remote-cli-");
const config = join(work, "tiny.json");
const dataDir = writeTinyImdb(join(work, "data"), { train: 40, test: 40, unsup: 40 });
const cacheDir = join(work, "cache");

beforeAll(async () => {
  if (!existsSync(join(root, "dist", "cli", "main.js"))) throw new Error("the CLI is not built: run `npm run build` first");
  ({ dir: keys, stdout: keygenText } = keygen());
  writeFileSync(config, JSON.stringify(TINY));
  worker = await startHandWorker(keys);
}, 150_000);
afterAll(async () => {
  await worker?.stop();
});

describe("dpalign with --worker-endpoint", () => {
  it("keygen and the worker say which files go where and name the real flags", () => {
    expect(keygenText).toMatch(/worker\.key, authorized_keys .*worker's machine[^]*dpalign worker --endpoint tcp:\/\/0\.0\.0\.0:5555 --keys /);
    expect(keygenText).toMatch(/worker\.pub, client\.key .*control plane[^]*--worker-endpoint tcp:\/\/WORKER-HOST:5555 --worker-keys /);
    expect(keygenText).not.toMatch(/WorkerClient/);
    // and the worker, once started, says how a control plane reaches it
    expect(worker.stderr()).toContain(`a control plane uses it with --worker-endpoint ${worker.endpoint} --worker-keys DIR`);
  });

  it("runs a tiny pipeline on the remote worker, which then serves the next control plane", async () => {
    const runDir = join(work, "runs", "tiny");
    const r = await dpalignAsync(["run", config, "--worker-endpoint", worker.endpoint, "--worker-keys", keys, "--data-dir", dataDir, "--cache-dir", cacheDir, "--run-dir", runDir]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/composed: epsilon \d/);
    expect(r.stderr).toMatch(new RegExp(`worker started by hand: ${worker.endpoint} \\(.+, cpu\\)`));
    const summary = JSON.parse(readFileSync(join(runDir, "summary.json"), "utf8"));
    expect(summary.differentiallyPrivate).toBe(true);
    // the worker wrote the checkpoints where the control plane reads them (the shared filesystem)
    expect(existsSync(join(runDir, "checkpoints", "ppo", "last", "manifest.json"))).toBe(true);
    expect(readFileSync(join(runDir, "ledger.jsonl"), "utf8").trim().split("\n").length).toBeGreaterThan(0);
    // the worker is still up and free: doctor gets it
    const d = dpalign(["doctor", "--worker-endpoint", worker.endpoint, "--worker-keys", keys, "--cache-dir", cacheDir, "--json"]);
    expect(d.status, d.stdout + d.stderr).toBe(0);
    const report = JSON.parse(d.stdout);
    expect(report.healthy).toBe(true);
    expect(report.checks.map((c: { name: string }) => c.name)).toEqual(expect.arrayContaining(["remote worker", "worker round trip", "shared model"]));
    expect(worker.proc.exitCode).toBeNull();
  }, 300_000);

  it("sweeps on the remote worker", async () => {
    const sweepConfig = join(work, "tiny-sweep.json");
    writeFileSync(sweepConfig, JSON.stringify({ ...TINY, sweep: { epsilons: [8], seeds: [1] } }));
    const root = join(work, "sweep");
    const r = await dpalignAsync(["sweep", sweepConfig, "--worker-endpoint", worker.endpoint, "--worker-keys", keys, "--data-dir", dataDir, "--cache-dir", cacheDir, "--root", root]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/written to .*table\.md/);
    expect(existsSync(join(root, "eps8-seed1", "summary.json"))).toBe(true);
  }, 300_000);

  it("runs a tiny pipeline on two remote workers as data-parallel ranks", async () => {
    const second = await startHandWorker(keys);
    try {
      const runDir = join(work, "runs", "tiny-2");
      const r = await dpalignAsync([
        "run", config, "--worker-endpoint", worker.endpoint, "--worker-endpoint", second.endpoint, "--worker-keys", keys,
        "--worker-rendezvous", `127.0.0.1:${await freePort()}`, "--data-dir", dataDir, "--cache-dir", cacheDir, "--run-dir", runDir,
      ]);
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(readFileSync(join(runDir, "summary.json"), "utf8")).differentiallyPrivate).toBe(true);
      expect(r.stderr).toMatch(/2 workers started by hand in one process group \(gloo, rendezvous 127\.0\.0\.1:\d+\)/);
      expect(second.stderr()).toMatch(/serving control plane/); // rank 1 took part
      // both workers are free again, and out of the process group: each serves a lone control plane
      for (const ep of [worker.endpoint, second.endpoint]) {
        const c = await WorkerClient.connect(ep, { keysDir: keys });
        await c.close();
      }
    } finally {
      await second.stop();
    }
  }, 300_000);

  it("refuses to share a worker with another control plane", async () => {
    const holder = await WorkerClient.connect(worker.endpoint, { keysDir: keys });
    try {
      const r = await dpalignAsync(["run", config, "--worker-endpoint", worker.endpoint, "--worker-keys", keys, "--data-dir", dataDir, "--cache-dir", cacheDir, "--run-dir", join(work, "runs", "busy")], 60_000);
      expectUserError(r, /the worker on .* is busy: it serves another control plane \(dpalign-ts\/[^ ]+ pid \d+/);
      const d = await dpalignAsync(["doctor", "--worker-endpoint", worker.endpoint, "--worker-keys", keys], 60_000);
      expect(d.status).toBe(1);
      expect(d.stdout).toMatch(/FAIL\s+remote worker\s+.*is busy/);
    } finally {
      await holder.close();
    }
  }, 120_000);

  it("ends in one message for an unreachable endpoint, wrong keys, missing keys and several endpoints", async () => {
    const common = [config, "--data-dir", dataDir, "--cache-dir", cacheDir, "--run-dir", join(work, "runs", "bad")];
    const dead = `tcp://127.0.0.1:${await freePort()}`;
    expectUserError(dpalign(["run", ...common, "--worker-endpoint", dead, "--worker-keys", keys, "--worker-timeout", "2"]), new RegExp(`nothing accepts connections at ${dead}`));
    const other = keygenDir(join(tmp("dpalign-remote-cli-other-"), "keys")).dir;
    expectUserError(dpalign(["run", ...common, "--worker-endpoint", worker.endpoint, "--worker-keys", other, "--worker-timeout", "20"]), /worker\.pub in .* is not the public key of the worker listening there/);
    expectUserError(dpalign(["run", ...common, "--worker-endpoint", worker.endpoint, "--worker-keys", join(work, "no-keys")]), /--worker-keys: .*no-keys\/worker\.pub not found; create keys with `dpalign worker keygen/);
    expectUserError(dpalign(["sweep", config, "--worker-endpoint", "tcp://10.9.8.7:5555"]), /--worker-keys: a worker at tcp:\/\/10\.9\.8\.7:5555 .*uses CurveZMQ/);
    expectUserError(dpalign(["run", ...common, "--worker-endpoint", worker.endpoint, "--worker-endpoint", dead, "--worker-keys", keys, "--worker-timeout", "2"]), new RegExp(`nothing accepts connections at ${dead}`));
    expectUserError(dpalign(["run", ...common, "--worker-endpoint", worker.endpoint, "--worker-keys", keys, "--workers", "2"]), /workers = 2 .*each --worker-endpoint is one rank/);
    expectUserError(dpalign(["doctor", "--worker-endpoint", "nonsense", "--worker-keys", keys]), /--worker-endpoint: "nonsense" is not tcp:\/\/HOST:PORT/);
    // the run directory was not even created
    expect(existsSync(join(work, "runs", "bad"))).toBe(false);
  }, 120_000);
});
