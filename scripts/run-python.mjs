#!/usr/bin/env node
// Runs the worker's Python (DPALIGN_PYTHON, else the project's .venv) with the given arguments.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const python = process.env.DPALIGN_PYTHON ?? join(root, ".venv", "bin", "python");
if (!process.env.DPALIGN_PYTHON && !existsSync(python)) {
  console.error("dpalign: no Python environment yet; run `npm run setup:python` first.");
  process.exit(1);
}
const r = spawnSync(python, process.argv.slice(2), { stdio: "inherit", cwd: root });
process.exit(r.status ?? 1);
