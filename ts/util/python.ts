import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The project root (the folder holding package.json), found from this compiled file's location. */
export const projectRoot: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("dpalign: cannot find the project root (package.json)");
    dir = up;
  }
  return dir;
})();

/**
 * The interpreter that runs workers: DPALIGN_PYTHON if set, else the project's .venv (made by
 * `npm run setup:python`), else `python3` from PATH.
 */
export function resolvePython(): string {
  if (process.env.DPALIGN_PYTHON) return process.env.DPALIGN_PYTHON;
  const venv = join(projectRoot, ".venv", "bin", "python");
  if (existsSync(venv)) return venv;
  return "python3";
}
