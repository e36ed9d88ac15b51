/**
 * An exclusive lock on a run directory (or a sweep's root): a file created with O_EXCL that holds
 * the owner's pid and host. A second process is refused; a lock whose process is gone is reported
 * as stale and broken only when asked (--force-unlock). Released on every exit path the process
 * survives (normal end, error, SIGINT/SIGTERM through the CLI's handlers, process exit).
 */
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { RunLockedError } from "./run-errors.js";

export const LOCK_FILE = ".lock";

interface LockOwner {
  pid: number;
  host: string;
  since: string;
  command: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

export class RunLock {
  private released = false;
  private readonly onExit = () => this.release();

  private constructor(readonly file: string) {
    process.once("exit", this.onExit);
  }

  /** Takes the lock on `dir` (which must exist), or throws RunLockedError saying who holds it. */
  static acquire(dir: string, opts: { forceUnlock?: boolean } = {}): RunLock {
    const file = join(dir, LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(file, "wx", 0o644);
        const owner: LockOwner = { pid: process.pid, host: hostname(), since: new Date().toISOString(), command: process.argv.slice(1).join(" ") };
        writeSync(fd, JSON.stringify(owner) + "\n");
        closeSync(fd);
        return new RunLock(file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw e;
      }
      const owner = readOwner(file);
      const sameHost = owner?.host === hostname();
      const stale = !owner || (sameHost && !alive(owner.pid));
      if (opts.forceUnlock && (stale || !sameHost)) {
        rmSync(file, { force: true });
        continue;
      }
      const who = owner ? `pid ${owner.pid} on ${owner.host} since ${owner.since}` : "an unreadable lock file";
      if (stale) {
        throw new RunLockedError(`${dir} is locked by ${who}, which is no longer running (stale lock). If no other dpalign uses this directory, rerun with --force-unlock`);
      }
      throw new RunLockedError(
        `${dir} is in use by ${who}${sameHost ? "" : " (another machine: if that process is gone, rerun with --force-unlock)"}; wait for it to finish or use another --run-dir`,
      );
    }
    throw new RunLockedError(`${dir}: could not take the lock`);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    process.removeListener("exit", this.onExit);
    const owner = readOwner(this.file);
    if (owner?.pid === process.pid) rmSync(this.file, { force: true });
  }
}

function readOwner(file: string): LockOwner | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const o = JSON.parse(readFileSync(file, "utf8")) as LockOwner;
    return typeof o.pid === "number" && typeof o.host === "string" ? o : undefined;
  } catch {
    return undefined;
  }
}
