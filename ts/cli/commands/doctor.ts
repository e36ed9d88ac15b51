import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { Argv } from "yargs";
import { formatDoctor, runDoctor, type Check, type DoctorReport } from "../../doctor/inspect.js";
import { DEFAULT_CACHE_DIR } from "../../pipeline/run.js";
import { Tensor } from "../../protocol/tensor.js";
import { PROTOCOL_VERSION } from "../../transport/codec.js";
import { DpalignError, InvalidArgumentError } from "../../util/errors.js";
import { projectRoot } from "../../util/python.js";
import { WorkerApi } from "../../worker/api.js";
import { checkEndpoints, checkSharedFilesystem, type SharedDir } from "../../worker/connect.js";
import { WorkerClient } from "../../transport/client.js";
import { loadClientKeys } from "../../transport/curve.js";
import { workerOptions } from "./pipeline-common.js";

/**
 * The checks of a worker started by hand: reached with the given keys, its versions and devices,
 * an echo round trip, and whether it sees `sharedDirs` at the same paths. Local Python is not
 * checked: a control plane with remote workers does not need torch itself.
 */
async function remoteDoctor(endpoint: string, keysDir: string | undefined, timeoutS: number, sharedDirs: SharedDir[], progress?: (m: string) => void): Promise<DoctorReport> {
  const checks: Check[] = [];
  const fail = (name: string, e: unknown, fix?: string) => {
    if (!(e instanceof DpalignError)) throw e;
    checks.push({ name, status: "fail", detail: e.message, fix });
  };
  progress?.(`connecting to the worker at ${endpoint}`);
  let client: WorkerClient | undefined;
  const t0 = performance.now();
  try {
    client = await WorkerClient.connect(endpoint, { keysDir, startTimeoutMs: timeoutS * 1000 });
  } catch (e) {
    fail("remote worker", e);
    return { healthy: false, python: `remote worker at ${endpoint}`, checks };
  }
  try {
    const info = client.info;
    const caps = info.capabilities;
    checks.push({
      name: "remote worker",
      status: "ok",
      detail: `${endpoint}${keysDir ? " (CurveZMQ)" : ""}: ${info.hostname || "?"} pid ${info.pid}, dpalign_worker ${info.workerVersion}, handshake in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    });
    checks.push({ name: "protocol", status: "ok", detail: `version ${info.protocolVersion} on both sides (control plane ${PROTOCOL_VERSION})` });
    checks.push({ name: "python / torch", status: caps.torchVersion ? "ok" : "fail", detail: `Python ${caps.pythonVersion}, torch ${caps.torchVersion || "missing"}` });
    checks.push({ name: "device", status: "ok", detail: `${caps.device} (visible: ${caps.devices.join(", ") || "cpu"})` });
    checks.push({ name: "DP backends", status: "ok", detail: caps.backends.join(", ") });
    try {
      const x = Tensor.float32(Array.from({ length: 1024 }, (_, i) => i), [32, 32]);
      const t1 = performance.now();
      const r = await new WorkerApi(client).echo({ batch: { x } }, { timeoutMs: 30_000 });
      const same = r.batch.x.shape.join() === "32,32" && r.batch.x.toNumbers().every((v, i) => v === i);
      checks.push({
        name: "worker round trip",
        status: same ? "ok" : "fail",
        detail: `echo of a 32x32 tensor in ${(performance.now() - t1).toFixed(1)} ms`,
        fix: same ? undefined : "the echoed tensor differs: report this as a bug",
      });
    } catch (e) {
      fail("worker round trip", e);
    }
    for (const d of sharedDirs) {
      try {
        await checkSharedFilesystem(client, [d]);
        checks.push({ name: `shared ${d.what.split(" ")[0]}`, status: "ok", detail: `the worker sees ${d.dir} at the same path` });
      } catch (e) {
        fail(`shared ${d.what.split(" ")[0]}`, e);
      }
    }
  } finally {
    await client.close();
  }
  return { healthy: checks.every((c) => c.status !== "fail"), python: `remote worker at ${endpoint}`, checks };
}

export function register(cli: Argv): Argv {
  return cli.command(
    "doctor",
    "Check the Python side: interpreter, torch and device, worker package, protocol version, optional backends, and a real worker round trip (or, with --worker-endpoint, a worker started by hand)",
    (y) =>
      y
        .option("json", { type: "boolean", default: false, describe: "print one JSON object instead of the table" })
        .option("round-trip", { type: "boolean", default: true, describe: "also start a worker and echo a tensor over ZeroMQ" })
        .option("cache-dir", { type: "string", describe: "with --worker-endpoint: the model cache the worker must share (default .dpalign-cache/)" })
        .options(workerOptions),
    async (args) => {
      const progress = args.json ? undefined : (m: string) => process.stderr.write(`… ${m}\n`);
      const endpoints = args.workerEndpoint ?? [];
      let report: DoctorReport;
      if (endpoints.length) {
        checkEndpoints(endpoints, args.workerKeys);
        if (endpoints.length > 1) throw new InvalidArgumentError("--worker-endpoint", "doctor checks one worker at a time: give one --worker-endpoint");
        if (args.workerKeys) loadClientKeys(args.workerKeys); // a missing key file is a usage error, not a failed check
        if (!(args.workerTimeout > 0)) throw new InvalidArgumentError("--worker-timeout", "must be a positive number of seconds");
        const shared = [
          { dir: args.cacheDir ?? DEFAULT_CACHE_DIR, what: "model cache (--cache-dir)" },
          { dir: join(projectRoot, "runs"), what: "runs directory (default parent of run directories)" },
        ];
        report = await remoteDoctor(endpoints[0], args.workerKeys, args.workerTimeout, shared, progress);
      } else {
        if (args.workerKeys) throw new InvalidArgumentError("--worker-keys", "is for a worker started by hand: give its address with --worker-endpoint tcp://HOST:PORT");
        report = await runDoctor({ roundTrip: args.roundTrip, onProgress: progress });
      }
      process.stdout.write(args.json ? JSON.stringify(report, null, 2) + "\n" : formatDoctor(report) + "\n");
      if (!report.healthy) process.exitCode = 1;
    },
  );
}
