/**
 * The stage time breakdown: phases split into worker handler time, transport, encode/decode and
 * the control plane's own code; the worker's handler time comes back in Reply.handler_s.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PhaseClock, renderPhaseTable } from "../../../ts/pipeline/timing.js";
import { recordCall, rpcSnapshot, tallyDiff } from "../../../ts/transport/rpc-stats.js";
import { WorkerClient } from "../../../ts/transport/client.js";
import { WorkerApi } from "../../../ts/worker/api.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("PhaseClock", () => {
  it("splits a phase into worker, transport, codec and control-plane time", async () => {
    const clock = new PhaseClock();
    await clock.time("generate", async () => {
      await sleep(400);
      recordCall({ calls: 2, roundTripMs: 300, handlerMs: 200, codecMs: 20, bytesOut: 10, bytesIn: 20 });
    });
    await clock.time("generate", async () => {
      await sleep(100);
    });
    await sleep(150);
    const rows = clock.rows();
    expect(rows.map((r) => r.phase)).toEqual(["generate", "control plane, other"]);
    const g = rows[0];
    expect(g.calls).toBe(2);
    expect(g.wallS).toBeGreaterThanOrEqual(0.5);
    expect(g.workerS).toBeCloseTo(0.2, 5);
    expect(g.transportS).toBeCloseTo(0.1, 5); // 300 - 200 - 20 = 80 ms -> 0.1 s rounded
    expect(g.codecS).toBeCloseTo(0, 5);
    expect(g.controlS).toBeGreaterThanOrEqual(0.2); // 500 ms of wall minus 300 ms of round trips
    expect(rows[1].wallS).toBeGreaterThanOrEqual(0.1);
    const table = renderPhaseTable(rows);
    expect(table[0]).toMatch(/^\| phase \| wall s \| share/);
    expect(table).toHaveLength(4);
    expect(table[2]).toMatch(/^\| generate \| 0\.\d \| \d+% \| 2 \| 0\.2 \| 0\.1 \| 0\.0 \|/);
  });

  it("still records a phase that throws", async () => {
    const clock = new PhaseClock();
    await expect(clock.time("boom", async () => { throw new Error("x"); })).rejects.toThrow("x");
    expect(clock.rows()[0].phase).toBe("boom");
  });
});

describe("handler time from a real worker", () => {
  let client: WorkerClient;
  beforeAll(async () => {
    client = await WorkerClient.spawn({ heartbeatIntervalMs: 200 });
  });
  afterAll(async () => {
    await client?.close();
  });

  it("reports the worker's handler seconds for each call", async () => {
    const api = new WorkerApi(client);
    const before = rpcSnapshot();
    await api.echo({ payload: new Uint8Array([1]), sleepMs: 250 });
    const d = tallyDiff(rpcSnapshot(), before);
    expect(d.calls).toBe(1);
    expect(d.handlerMs).toBeGreaterThanOrEqual(240);
    expect(d.roundTripMs).toBeGreaterThanOrEqual(d.handlerMs);
    expect(d.bytesOut).toBeGreaterThan(0);
    expect(d.bytesIn).toBeGreaterThan(0);
  });
});
