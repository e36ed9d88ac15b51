/**
 * CurveZMQ keys for workers reached over tcp:// (DESIGN: an unauthenticated remote peer is
 * refused). `dpalign worker keygen --out DIR` writes (the control plane reads its files from
 * `--worker-keys DIR`, the worker from `--keys DIR`):
 *   worker.key       the worker's key pair (stays on the worker's machine)
 *   worker.pub       the worker's public key (the control plane needs it)
 *   client.key       the control plane's key pair (stays on the control plane's machine)
 *   authorized_keys  the client public keys the worker admits
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { makeDir } from "../util/fs.js";
import { join } from "node:path";
import * as zmq from "zeromq";
import { InvalidArgumentError } from "../util/errors.js";

export interface CurveClientKeys {
  serverPublicKey: string;
  publicKey: string;
  secretKey: string;
}

function writePrivate(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** Writes a fresh worker key pair and client key pair into `dir`; refuses to overwrite. */
export function keygen(dir: string): { dir: string; files: string[] } {
  makeDir(dir, "--out");
  const files = ["worker.key", "worker.pub", "client.key", "authorized_keys"];
  const clash = files.filter((f) => existsSync(join(dir, f)));
  if (clash.length) throw new InvalidArgumentError("--out", `${dir} already holds ${clash.join(", ")}; choose an empty directory`);
  const worker = zmq.curveKeyPair();
  const client = zmq.curveKeyPair();
  writePrivate(join(dir, "worker.key"), JSON.stringify({ public: worker.publicKey, secret: worker.secretKey }) + "\n");
  writeFileSync(join(dir, "worker.pub"), worker.publicKey + "\n");
  writePrivate(join(dir, "client.key"), JSON.stringify({ public: client.publicKey, secret: client.secretKey }) + "\n");
  writeFileSync(join(dir, "authorized_keys"), `# control planes allowed to use this worker\n${client.publicKey}\n`);
  return { dir, files };
}

/** Reads worker.pub and client.key from `dir` (as written by keygen). */
export function loadClientKeys(dir: string): CurveClientKeys {
  const read = (f: string) => {
    try {
      return readFileSync(join(dir, f), "utf8");
    } catch {
      throw new InvalidArgumentError("--worker-keys", `${join(dir, f)} not found; create keys with \`dpalign worker keygen --out ${dir}\``);
    }
  };
  const serverPublicKey = read("worker.pub").trim();
  let pair: { public?: string; secret?: string };
  try {
    pair = JSON.parse(read("client.key"));
  } catch {
    throw new InvalidArgumentError("--worker-keys", `${join(dir, "client.key")} is not the JSON key pair keygen writes`);
  }
  if (serverPublicKey.length !== 40 || pair.public?.length !== 40 || pair.secret?.length !== 40) {
    throw new InvalidArgumentError("--worker-keys", `keys in ${dir} are not 40-character Z85 strings`);
  }
  return { serverPublicKey, publicKey: pair.public, secretKey: pair.secret };
}

/** True for ipc:// and tcp:// endpoints on a loopback address. */
export function isLoopbackEndpoint(endpoint: string): boolean {
  if (endpoint.startsWith("ipc://") || endpoint.startsWith("inproc://")) return true;
  const m = /^tcp:\/\/\[?([^\]]+?)\]?:\d+$/.exec(endpoint);
  const host = m?.[1] ?? "";
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}
