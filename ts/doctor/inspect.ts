/**
 * In-process inspection of the Python side through pythonia (DESIGN: pythonia is for rare,
 * irregular calls such as `dpalign doctor`), plus one real worker round trip over ZeroMQ.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { PROTOCOL_VERSION } from "../transport/codec.js";
import { WorkerClient } from "../transport/client.js";
import { Tensor } from "../protocol/tensor.js";
import { WorkerApi } from "../worker/api.js";
import { ensurePythonEnv, projectRoot, resolvePython } from "../util/python.js";

export type CheckStatus = "ok" | "warn" | "fail";

export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
  fix?: string;
}

export interface DoctorReport {
  healthy: boolean;
  python: string;
  checks: Check[];
  /** What the Python side reported about itself (interpreter, torch, devices, packages). */
  python_info?: Record<string, unknown>;
}

interface PythonReport {
  python: string;
  executable: string;
  worker_version: string;
  protocol_version: number;
  backends: string[];
  packages: Record<string, string | null>;
  torch: string | null;
  torch_error?: string;
  devices?: string[];
  device?: string;
  torch_threads?: number;
}

const FIX_ENV = "run `npm run setup:python` (or set DPALIGN_PYTHON to an interpreter with the packages in requirements.txt)";

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Calls dpalign_worker.capabilities.report() inside a pythonia-hosted interpreter. */
async function pythonReport(python: string): Promise<PythonReport> {
  process.env.PYTHON_BIN = python;
  process.env.PYTHONPATH = [join(projectRoot, "py_runtime"), process.env.PYTHONPATH].filter(Boolean).join(":");
  const { python: py } = await import("pythonia");
  try {
    const caps = await withTimeout(py("dpalign_worker.capabilities"), 60_000, "pythonia import of dpalign_worker");
    const report = (await withTimeout(caps.report(), 60_000, "capabilities.report()")) as { valueOf(): Promise<unknown> };
    return (await report.valueOf()) as PythonReport;
  } finally {
    py.exit();
  }
}

export async function runDoctor(opts: { roundTrip?: boolean; onProgress?: (msg: string) => void } = {}): Promise<DoctorReport> {
  try {
    ensurePythonEnv();
  } catch {
    // Reported below: the interpreter check names what is missing.
  }
  const python = resolvePython();
  const checks: Check[] = [];
  const progress = opts.onProgress ?? (() => undefined);

  progress(`checking the interpreter ${python}`);
  const probe = spawnSync(python, ["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], { encoding: "utf8", timeout: 30_000 });
  if (probe.error || probe.status !== 0) {
    const why = probe.error ? (probe.error as NodeJS.ErrnoException).code === "ENOENT" ? "not found" : probe.error.message : probe.stderr.trim();
    checks.push({ name: "python interpreter", status: "fail", detail: `${python}: ${why}`, fix: FIX_ENV });
    return { healthy: false, python, checks };
  }
  const version = probe.stdout.trim();
  const [major, minor] = version.split(".").map(Number);
  checks.push({
    name: "python interpreter",
    status: major === 3 && minor >= 10 ? "ok" : "fail",
    detail: `${python} (Python ${version})`,
    fix: major === 3 && minor >= 10 ? undefined : "dpalign's worker needs Python 3.10 or newer",
  });

  // A plain subprocess first: when the import fails, its last traceback line says why, which a
  // bridge error does not always carry.
  const importProbe = spawnSync(python, ["-c", "import dpalign_worker.capabilities"], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, PYTHONPATH: [join(projectRoot, "py_runtime"), process.env.PYTHONPATH].filter(Boolean).join(":") },
  });
  if (importProbe.status !== 0) {
    const last = importProbe.stderr.trim().split("\n").pop() ?? "import failed";
    checks.push({ name: "worker package importable", status: "fail", detail: last.slice(0, 200), fix: FIX_ENV });
    return { healthy: false, python, checks };
  }

  progress("inspecting the Python side in-process (pythonia)");
  let info: PythonReport | undefined;
  try {
    info = await pythonReport(python);
  } catch (e) {
    const msg = (e as Error).message.trim() || String(e);
    checks.push({ name: "in-process inspection (pythonia)", status: "fail", detail: msg.slice(0, 200), fix: FIX_ENV });
    return { healthy: false, python, checks };
  }
  checks.push({ name: "worker package importable", status: "ok", detail: `dpalign_worker ${info.worker_version}` });
  checks.push(
    info.torch
      ? { name: "torch", status: "ok", detail: `${info.torch} (${info.torch_threads} threads)` }
      : { name: "torch", status: "fail", detail: info.torch_error ?? "not importable", fix: FIX_ENV },
  );
  if (info.devices) {
    checks.push({ name: "device", status: "ok", detail: `${info.device} (available: ${info.devices.join(", ")})` });
  }
  checks.push(
    info.protocol_version === PROTOCOL_VERSION
      ? { name: "protocol version", status: "ok", detail: `${PROTOCOL_VERSION} on both sides` }
      : {
          name: "protocol version",
          status: "fail",
          detail: `control plane speaks ${PROTOCOL_VERSION}, worker speaks ${info.protocol_version}`,
          fix: "install the dpalign_worker that ships with this dpalign (npm run setup:python)",
        },
  );
  for (const pkg of ["transformers", "peft", "safetensors", "tokenizers", "pyzmq", "protobuf"]) {
    const v = info.packages[pkg];
    checks.push(v ? { name: pkg, status: "ok", detail: v } : { name: pkg, status: "fail", detail: "not installed", fix: FIX_ENV });
  }
  checks.push({
    name: "DP backends",
    status: "ok",
    detail: info.backends.join(", ") + (info.backends.includes("opacus") ? "" : " (opacus optional, not installed)"),
  });

  if (opts.roundTrip !== false) {
    progress("starting a worker for a round trip over ZeroMQ");
    const t0 = performance.now();
    let client: WorkerClient | undefined;
    try {
      client = await WorkerClient.spawn({ python, startTimeoutMs: 120_000 });
      const started = performance.now() - t0;
      const x = Tensor.float32(Array.from({ length: 1024 }, (_, i) => i), [32, 32]);
      const t1 = performance.now();
      const r = await new WorkerApi(client).echo({ batch: { x } }, { timeoutMs: 30_000 });
      const rtt = performance.now() - t1;
      const same = r.batch.x.shape.join() === "32,32" && r.batch.x.toNumbers().every((v, i) => v === i);
      checks.push({
        name: "worker round trip",
        status: same ? "ok" : "fail",
        detail: `pid ${client.info.pid} on ${client.endpoint.split(":")[0]}://, started in ${(started / 1000).toFixed(1)} s, echo of a 32x32 tensor in ${rtt.toFixed(1)} ms`,
        fix: same ? undefined : "the echoed tensor differs: report this as a bug",
      });
    } catch (e) {
      checks.push({ name: "worker round trip", status: "fail", detail: (e as Error).message.split("\n")[0], fix: FIX_ENV });
    } finally {
      await client?.close();
    }
  }
  return { healthy: checks.every((c) => c.status !== "fail"), python, checks, python_info: info as unknown as Record<string, unknown> };
}

export function formatDoctor(report: DoctorReport): string {
  const mark: Record<CheckStatus, string> = { ok: "ok  ", warn: "warn", fail: "FAIL" };
  const width = Math.max(...report.checks.map((c) => c.name.length));
  const lines = report.checks.map((c) => `  ${mark[c.status]}  ${c.name.padEnd(width)}  ${c.detail}${c.fix ? `\n        fix: ${c.fix}` : ""}`);
  const verdict = report.healthy ? "dpalign doctor: the worker is healthy." : "dpalign doctor: problems found (see FAIL lines above).";
  return [...lines, "", verdict].join("\n");
}
