import { describe, expect, it } from "vitest";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { WorkerClient } from "../../../ts/transport/client.js";
import { isLoopbackEndpoint, keygen, loadClientKeys } from "../../../ts/transport/curve.js";
import { WorkerStartError } from "../../../ts/transport/errors.js";
import { resolvePython, projectRoot } from "../../../ts/util/python.js";
import { WorkerApi } from "../../../ts/worker/api.js";

describe("CurveZMQ over tcp", () => {
  it("admits a control plane with the authorized key and refuses one without", async () => {
    const dir = keygen(mkdtempSync(join(tmpdir(), "dpalign-keys-"))).dir;
    const endpoint = `tcp://127.0.0.1:${29_000 + (process.pid % 1000)}`;
    const client = await WorkerClient.spawn({ endpoint, keysDir: dir });
    await expect(new WorkerApi(client).ping()).resolves.toBeDefined();

    // A second control plane with a key pair the worker never saw gets no handshake.
    const stranger = keygen(mkdtempSync(join(tmpdir(), "dpalign-keys-"))).dir;
    const wrong = { ...loadClientKeys(stranger), serverPublicKey: loadClientKeys(dir).serverPublicKey };
    const err = await WorkerClient.connect(endpoint, { curve: wrong, startTimeoutMs: 1_500 }).catch((e) => e);
    expect(err).toBeInstanceOf(WorkerStartError);
    expect(err.message).toMatch(/authorized_keys/);
    await client.close();
  });

  it("refuses to serve a non-loopback tcp address without keys", () => {
    const r = spawnSync(resolvePython(), ["-m", "dpalign_worker", "--endpoint", "tcp://0.0.0.0:5999"], {
      encoding: "utf8",
      env: { ...process.env, PYTHONPATH: join(projectRoot, "py_runtime") },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/without CurveZMQ.*keygen/s);
  });

  it("tells loopback from remote endpoints", () => {
    expect(isLoopbackEndpoint("ipc:///tmp/x.sock")).toBe(true);
    expect(isLoopbackEndpoint("tcp://127.0.0.1:5555")).toBe(true);
    expect(isLoopbackEndpoint("tcp://[::1]:5555")).toBe(true);
    expect(isLoopbackEndpoint("tcp://0.0.0.0:5555")).toBe(false);
    expect(isLoopbackEndpoint("tcp://10.1.2.3:5555")).toBe(false);
  });
});
