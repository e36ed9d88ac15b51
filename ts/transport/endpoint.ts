import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A fresh ipc:// endpoint in the temp directory (unix socket paths must stay under ~100 bytes). */
export function freshIpcEndpoint(): string {
  return `ipc://${join(tmpdir(), `dpalign-${process.pid}-${randomBytes(4).toString("hex")}.sock`)}`;
}

/** The socket file behind an ipc:// endpoint, or undefined for other transports. */
export function ipcPath(endpoint: string): string | undefined {
  return endpoint.startsWith("ipc://") ? endpoint.slice("ipc://".length) : undefined;
}
