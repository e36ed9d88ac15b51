/** A worker started by hand as a user would (`dpalign worker --endpoint tcp://... --keys DIR`, the built CLI), for the remote-worker tests. */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const root = resolve(import.meta.dirname, "..", "..", "..");
export const bin = join(root, "bin", "dpalign.js");

export function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** `dpalign worker keygen --out DIR` through the CLI; returns DIR and what it printed. */
export function keygen(): { dir: string; stdout: string } {
  const dir = join(tmp("dpalign-remote-keys-"), "keys");
  const r = spawnSync(process.execPath, [bin, "worker", "keygen", "--out", dir], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`keygen failed: ${r.stderr}`);
  return { dir, stdout: r.stdout };
}

/** True where `unshare -rm` can give a process a mount namespace of its own (Linux, user namespaces allowed). */
export function canUnshare(): boolean {
  const r = spawnSync("unshare", ["-rm", "true"], { encoding: "utf8" });
  return r.status === 0;
}

export interface HandWorker {
  endpoint: string;
  proc: ChildProcess;
  stderr: () => string;
  stop: () => Promise<void>;
}

/**
 * Starts `dpalign worker --endpoint tcp://127.0.0.1:PORT --keys DIR` and waits for "listening on".
 * `hide`: a directory the worker must not see (a fresh tmpfs is mounted over it in a mount
 * namespace of its own): a machine that does not share that filesystem.
 */
export async function startHandWorker(keysDir: string, opts: { hide?: string } = {}): Promise<HandWorker> {
  const port = await freePort();
  const endpoint = `tcp://127.0.0.1:${port}`;
  const args = [bin, "worker", "--endpoint", endpoint, "--keys", keysDir, "--threads", "2"];
  const proc = opts.hide
    ? spawn("unshare", ["-rm", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', opts.hide, process.execPath, ...args], { stdio: ["ignore", "ignore", "pipe"] })
    : spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  proc.stderr!.setEncoding("utf8");
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`the worker did not start within 120 s:\n${err}`)), 120_000);
    proc.stderr!.on("data", (d: string) => {
      err += d;
      if (/listening on/.test(err)) {
        clearTimeout(timer);
        res();
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`the worker exited with ${code}:\n${err}`));
    });
  });
  const exited = new Promise<void>((res) => proc.once("exit", () => res()));
  return {
    endpoint,
    proc,
    stderr: () => err,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    },
  };
}
