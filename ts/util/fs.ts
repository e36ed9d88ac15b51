import { mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { InvalidArgumentError } from "./errors.js";

/**
 * Creates `dir` and its missing parents one level at a time (at most one mkdir per path part),
 * naming the part that is in the way. Node's recursive mkdir spins forever on some paths (e.g.
 * under /proc, where mkdir answers ENOENT for a parent that exists) and reports ENOTDIR without
 * saying which part is a file.
 */
export function makeDir(dir: string, field: string): void {
  const missing: string[] = [];
  for (let p = resolve(dir); ; ) {
    let isDir: boolean;
    try {
      isDir = statSync(p).isDirectory();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ENOTDIR") throw new InvalidArgumentError(field, `cannot use ${dir}: ${p} (${code ?? (e as Error).message})`);
      missing.push(p);
      const up = dirname(p);
      if (up === p) break;
      p = up;
      continue;
    }
    if (!isDir) throw new InvalidArgumentError(field, p === resolve(dir) ? `${dir} is a file, not a directory` : `cannot create ${dir}: ${p} is a file, not a directory`);
    break;
  }
  for (const p of missing.reverse()) {
    try {
      mkdirSync(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EEXIST" && statSync(p).isDirectory()) continue;
      const why =
        code === "EACCES" || code === "EPERM" ? "permission denied"
        : code === "EROFS" ? "read-only file system"
        : code === "ENOENT" ? "this file system does not allow new directories there"
        : code ?? (e as Error).message;
      throw new InvalidArgumentError(field, `cannot create the directory ${p} (${why}); choose another ${field}`);
    }
  }
}

