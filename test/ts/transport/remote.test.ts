/**
 * Workers started by hand and reached over tcp:// with CurveZMQ (ts/worker/connect.ts): one
 * control plane at a time, the worker reusable after it; every way of pointing at the wrong worker
 * (keys, port, version, a machine without the shared filesystem) ends in one clear error, fast.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyFileSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { WorkerClient } from "../../../ts/transport/client.js";
import { keygen as keygenDir } from "../../../ts/transport/curve.js";
import { ProtocolMismatchError, WorkerBusyError, WorkerStartError } from "../../../ts/transport/errors.js";
import { checkEndpoints, connectWorkers, openRemoteWorkers, rendezvousOf, SharedFilesystemError } from "../../../ts/worker/connect.js";
import { WorkerApi } from "../../../ts/worker/api.js";
import { canUnshare, freePort, keygen, startHandWorker, tmp, type HandWorker } from "./remote-helpers.js";

let keys: string;
let worker: HandWorker;
const shared = tmp("dpalign-remote-shared-");

beforeAll(async () => {
  keys = keygen().dir;
  worker = await startHandWorker(keys);
}, 150_000);
afterAll(async () => {
  await worker?.stop();
});

describe("a worker started by hand", () => {
  it("serves one control plane at a time, and the next one after it", async () => {
    const [first] = await connectWorkers([worker.endpoint], keys, { sharedDirs: [{ dir: shared, what: "run directory" }] });
    expect(first.info.hostname).toBeTruthy();
    await expect(new WorkerApi(first).ping()).resolves.toBeDefined();
    // the shared-filesystem check leaves no probe files behind
    expect(readdirSync(shared)).toEqual([]);

    const second = await connectWorkers([worker.endpoint], keys).catch((e: unknown) => e);
    expect(second).toBeInstanceOf(WorkerBusyError);
    expect((second as Error).message).toMatch(new RegExp(`${worker.endpoint}: the worker on .* is busy: it serves another control plane .*one control plane at a time`));
    // the refused control plane disturbed nothing: the first one still works
    await expect(new WorkerApi(first).ping()).resolves.toBeDefined();
    expect(first.state).toBe("ready");

    await first.close(); // ends the session; the worker keeps serving
    const [third] = await connectWorkers([worker.endpoint], keys);
    await expect(new WorkerApi(third).ping()).resolves.toBeDefined();
    await third.close();
    expect(worker.proc.exitCode).toBeNull();
  }, 60_000);

  it("is free again as soon as a control plane's connection drops", async () => {
    // A client that vanishes without ending its session (the process was killed): its socket closes.
    const gone = await WorkerClient.connect(worker.endpoint, { keysDir: keys });
    (gone as unknown as { channel: { close(): void } }).channel.close();
    let next: WorkerClient | undefined;
    for (let i = 0; i < 20 && !next; i++) {
      next = await WorkerClient.connect(worker.endpoint, { keysDir: keys }).catch((e: unknown) => {
        if (!(e instanceof WorkerBusyError)) throw e;
        return new Promise<undefined>((r) => setTimeout(() => r(undefined), 250));
      });
    }
    expect(next?.state).toBe("ready");
    await next?.close();
  }, 60_000);

  it("keeps its session across a restart of the same client", async () => {
    const c = await WorkerClient.connect(worker.endpoint, { keysDir: keys });
    await c.restart(); // a new socket, the same session id: not a second control plane
    expect(c.state).toBe("ready");
    await expect(new WorkerApi(c).ping()).resolves.toBeDefined();
    await expect(WorkerClient.connect(worker.endpoint, { keysDir: keys })).rejects.toBeInstanceOf(WorkerBusyError);
    await c.close();
  }, 60_000);

  it("names the key that is wrong: a client key the worker does not list, a worker.pub of another worker, no keys", async () => {
    const other = keygenDir(join(tmp("dpalign-remote-other-"), "keys")).dir;
    // this control plane's key is not in the worker's authorized_keys
    const strangerKeys = join(tmp("dpalign-remote-stranger-"), "keys");
    mkdirSync(strangerKeys);
    copyFileSync(join(keys, "worker.pub"), join(strangerKeys, "worker.pub"));
    copyFileSync(join(other, "client.key"), join(strangerKeys, "client.key"));
    const refused = await WorkerClient.connect(worker.endpoint, { keysDir: strangerKeys, startTimeoutMs: 30_000 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(WorkerStartError);
    expect((refused as Error).message).toMatch(/refused this control plane's CurveZMQ key: the authorized_keys file .* does not list the public key of .*stranger.*client\.key/);

    // worker.pub of another worker: the CURVE handshake cannot complete
    const wrongPub = await WorkerClient.connect(worker.endpoint, { keysDir: other, startTimeoutMs: 30_000 }).catch((e: unknown) => e);
    expect(wrongPub).toBeInstanceOf(WorkerStartError);
    expect((wrongPub as Error).message).toMatch(/worker\.pub in .* is not the public key of the worker listening there/);

    const noKeys = await WorkerClient.connect(worker.endpoint, { startTimeoutMs: 30_000 }).catch((e: unknown) => e);
    expect(noKeys).toBeInstanceOf(WorkerStartError);
    expect((noKeys as Error).message).toMatch(/requires CurveZMQ: pass --worker-keys DIR/);
    // none of them took the worker
    const [c] = await connectWorkers([worker.endpoint], keys);
    await c.close();
  }, 90_000);

  it("gives up on an endpoint where nothing listens within the timeout", async () => {
    const ep = `tcp://127.0.0.1:${await freePort()}`;
    const err = await WorkerClient.connect(ep, { keysDir: keys, startTimeoutMs: 1_500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerStartError);
    expect((err as Error).message).toMatch(new RegExp(`nothing accepts connections at ${ep} .*start a worker there with \`dpalign worker --endpoint`));
  });

  it("refuses another protocol version at handshake, naming both", async () => {
    const err = await WorkerClient.connect(worker.endpoint, { keysDir: keys, protocolVersion: 999 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolMismatchError);
    expect((err as Error).message).toMatch(new RegExp(`the worker at ${worker.endpoint}: client speaks protocol version 999, this worker speaks version \\d+`));
  });

  it("connects all of several workers or none", async () => {
    const dead = `tcp://127.0.0.1:${await freePort()}`;
    const err = await connectWorkers([worker.endpoint, dead], keys, { startTimeoutMs: 1_500 }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/nothing accepts connections/);
    // the worker that did connect was released again
    const [c] = await connectWorkers([worker.endpoint], keys);
    await c.close();
  }, 30_000);

  it("checks endpoints and keys before connecting", async () => {
    expect(() => checkEndpoints(["localhost:5555"], keys)).toThrow(/--worker-endpoint: "localhost:5555" is not tcp:\/\/HOST:PORT/);
    expect(() => checkEndpoints(["tcp://10.1.2.3:5555"], undefined)).toThrow(/--worker-keys: a worker at tcp:\/\/10\.1\.2\.3:5555 .* uses CurveZMQ/);
    expect(() => checkEndpoints(["tcp://[::1]:5555", "tcp://[::1]:5555"], undefined)).toThrow(/given twice/);
    await expect(openRemoteWorkers({ workerEndpoint: ["tcp://a:1"], workerKeys: keys }, [], 2)).rejects.toThrow(/workers = 2 .* asks for local workers.*each --worker-endpoint is one rank/);
    await expect(openRemoteWorkers({ workerKeys: keys }, [])).rejects.toThrow(/--worker-keys: is for workers started by hand/);
    await expect(openRemoteWorkers({ workerEndpoint: ["tcp://a:1", "tcp://b:2"], workerKeys: keys, workerRendezvous: "a" }, [])).rejects.toThrow(/--worker-rendezvous: "a" is not HOST:PORT/);
    await expect(openRemoteWorkers({ workerEndpoint: [worker.endpoint], workerKeys: join(shared, "nowhere") }, [])).rejects.toThrow(/--worker-keys: .*nowhere\/worker\.pub not found; create keys with `dpalign worker keygen/);
    expect(await openRemoteWorkers({}, [])).toBeUndefined();
    expect(rendezvousOf(undefined, "tcp://gpu-1:5555")).toEqual({ masterAddr: "gpu-1", masterPort: 5556 });
    expect(rendezvousOf("[fd00::1]:29500", "tcp://gpu-1:5555")).toEqual({ masterAddr: "fd00::1", masterPort: 29500 });
  });
});

describe.skipIf(!canUnshare())("a worker on a machine without the shared filesystem", () => {
  it("fails the connection, naming the directory, the worker's host and the fix", async () => {
    const hidden = tmp("dpalign-remote-hidden-");
    const elsewhere = await startHandWorker(keys, { hide: hidden });
    try {
      const err = await connectWorkers([elsewhere.endpoint], keys, { sharedDirs: [{ dir: shared, what: "model cache" }, { dir: hidden, what: "run directory" }] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SharedFilesystemError);
      expect((err as Error).message).toMatch(new RegExp(`the worker at ${elsewhere.endpoint} \\(.+\\) does not see the run directory ${hidden}: .*FileNotFoundError.*Remote workers need the run directory on a filesystem both machines share, mounted at the same path`));
      expect(readdirSync(hidden)).toEqual([]);
      // the failed check released the worker
      const [c] = await connectWorkers([elsewhere.endpoint], keys);
      await c.close();
    } finally {
      await elsewhere.stop();
    }
    expect(existsSync(hidden)).toBe(true);
  }, 150_000);
});
