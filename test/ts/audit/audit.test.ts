/**
 * `dpalign audit` over a real worker (seconds each): the real DP engine's empirical lower bound
 * stays below the claimed epsilon, and engines broken on purpose (noise / 10, clipping off) are
 * caught with a bound above it. m = 2000 canaries, q = 1, 5 steps, claimed epsilon 4.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAudit } from "../../../ts/audit/run.js";
import { WorkerClient } from "../../../ts/transport/client.js";
import { InvalidArgumentError } from "../../../ts/util/errors.js";
import { WorkerApi } from "../../../ts/worker/api.js";

const BASE = { epsilon: 4, delta: 1e-5, canaries: 2000, steps: 5, sampleRate: 1 };

let client: WorkerClient;
let api: WorkerApi;

beforeAll(async () => {
  client = await WorkerClient.spawn({ requestTimeoutMs: 60_000 });
  api = new WorkerApi(client);
}, 120_000);
afterAll(async () => {
  await client?.close();
});

describe("one-run audit of the DP engine", () => {
  it("finds the real engine consistent with its claim", async () => {
    const r = await runAudit(api, { ...BASE, broken: "none" });
    expect(r.accountantEpsilon).toBeLessThanOrEqual(4);
    expect(r.engine).toMatchObject({ noiseMultiplier: r.sigma, maxGradNorm: 1, noiseMode: "secure" });
    expect(r.engine.noiseStd).toBeCloseTo(r.sigma, 12);
    expect(r.model.trainableParameters).toBeGreaterThanOrEqual(2000);
    expect(r.scores).toHaveLength(2000);
    expect(r.included).toBe(r.scores.filter((s) => s.included).length);
    // scores are in units of one clipped contribution: included canaries gain one per step
    expect(r.signal.meanIn - r.signal.meanOut).toBeGreaterThan(5 - 2);
    expect(r.signal.meanIn - r.signal.meanOut).toBeLessThan(5 + 2);
    expect(r.signal.sdOut / (r.sigma * Math.sqrt(5))).toBeGreaterThan(0.9);
    expect(r.signal.sdOut / (r.sigma * Math.sqrt(5))).toBeLessThan(1.1);
    expect(r.lowerBound).toBeGreaterThanOrEqual(0);
    expect(r.lowerBound).toBeLessThan(4);
    expect(r.violation).toBe(false);
    expect(r.ceiling).toBeGreaterThan(4); // the audit could have shown a violation
  }, 120_000);

  it("catches noise divided by 10", async () => {
    const r = await runAudit(api, { ...BASE, broken: "noise" });
    expect(r.engine.noiseMultiplier).toBeCloseTo(r.sigma / 10, 12);
    expect(r.lowerBound).toBeGreaterThan(4);
    expect(r.violation).toBe(true);
  }, 120_000);

  it("catches clipping switched off while the noise stays calibrated for C", async () => {
    const r = await runAudit(api, { ...BASE, broken: "clip" });
    expect(r.engine.maxGradNorm).toBe(1000);
    expect(r.engine.noiseStd).toBeCloseTo(r.sigma, 9); // sigma * C, as accounted
    expect(r.lowerBound).toBeGreaterThan(4);
    expect(r.violation).toBe(true);
  }, 120_000);

  it("refuses bad options before any training", async () => {
    await expect(runAudit(api, { ...BASE, canaries: 5 })).rejects.toThrow(InvalidArgumentError);
    await expect(runAudit(api, { ...BASE, sampleRate: 0 })).rejects.toThrow(/sample-rate/);
    await expect(runAudit(api, { ...BASE, k: 1001 })).rejects.toThrow(/k: must be an integer in \[1, 1000\]/);
  });
});
