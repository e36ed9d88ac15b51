import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DpalignError, EnvVarError } from "./errors.js";

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
 * `npm run setup:python`), else `python3` from PATH. A DPALIGN_PYTHON that names no file (a path)
 * or no program on PATH (a bare name) is an error that says so: `npm run setup:python` cannot help
 * while the variable overrides the .venv it makes.
 */
export function resolvePython(): string {
  const env = process.env.DPALIGN_PYTHON;
  if (env) {
    checkEnvPython(env);
    return env;
  }
  const venv = join(projectRoot, ".venv", "bin", "python");
  if (existsSync(venv)) return venv;
  return "python3";
}

function checkEnvPython(python: string): void {
  const fix = "point it at a Python 3.10+ interpreter, or unset it to use the project's .venv (`npm run setup:python`)";
  if (python.includes("/")) {
    let st;
    try {
      st = statSync(python);
    } catch {
      throw new EnvVarError("DPALIGN_PYTHON", `is set to ${JSON.stringify(python)}, which does not exist; ${fix}`);
    }
    if (st.isDirectory()) throw new EnvVarError("DPALIGN_PYTHON", `is set to ${JSON.stringify(python)}, which is a directory, not an interpreter; ${fix}`);
    return;
  }
  const onPath = (process.env.PATH ?? "").split(delimiter).some((d) => d !== "" && existsSync(join(d, python)));
  if (!onPath) throw new EnvVarError("DPALIGN_PYTHON", `is set to ${JSON.stringify(python)}, which is not a program on PATH; ${fix}`);
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
