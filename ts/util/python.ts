import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DpalignError } from "./errors.js";

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

let envChecked = false;

/**
 * Makes sure the project's Python environment exists and matches requirements.txt (creating it on
 * first use, about a minute), unless the user manages one through DPALIGN_PYTHON. Cheap after the
 * first call: scripts/ensure-python-env.mjs compares a stamp hash and returns at once.
 */
export function ensurePythonEnv(): void {
  if (envChecked || process.env.DPALIGN_PYTHON) return;
  const r = spawnSync(process.execPath, [join(projectRoot, "scripts", "ensure-python-env.mjs")], { stdio: ["ignore", 2, 2] } /* progress goes to stderr so --json output stays clean */);
  if (r.status !== 0) {
    throw new DpalignError("PYTHON_ENV_FAILED", "could not prepare the Python environment (.venv) from requirements.txt; see the messages above, or set DPALIGN_PYTHON to an interpreter you manage");
  }
  envChecked = true;
}
