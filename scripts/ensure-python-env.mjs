#!/usr/bin/env node
// Creates or refreshes the worker's virtual environment (.venv) from requirements.txt and installs
// py_runtime into it. A stamp file holds a hash of the inputs so an up-to-date environment costs
// nothing. DPALIGN_PYTHON, when set, names an interpreter the user manages; then this does nothing.
//
// Optional step: where <projectRoot>/../shared/wheels holds an opacus wheel (the wheels built for
// this project's test machines, see that folder's README), Opacus is installed from it too, so the
// Opacus backend's tests and the side-by-side benchmark run. The folder's listing is part of the
// stamp hash, so the environment refreshes when it appears or changes. Elsewhere Opacus stays
// optional: `pip install opacus` into the environment gives the same backend.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const venv = join(root, ".venv");
const python = join(venv, "bin", "python");
const stamp = join(venv, ".dpalign-stamp");

if (process.env.DPALIGN_PYTHON) {
  console.log(`dpalign: using DPALIGN_PYTHON=${process.env.DPALIGN_PYTHON}; not managing .venv`);
  process.exit(0);
}

const wheels = join(dirname(root), "shared", "wheels");
const wheelFiles = existsSync(wheels) ? readdirSync(wheels).filter((f) => f.endsWith(".whl")).sort() : [];
const opacusWheel = wheelFiles.some((f) => /^opacus-.*\.whl$/.test(f));

const hash = createHash("sha256");
hash.update(readFileSync(join(root, "requirements.txt")));
hash.update(readFileSync(join(root, "py_runtime", "pyproject.toml")));
// the wheels folder's listing (names and sizes): a new or rebuilt wheel refreshes the environment
for (const f of wheelFiles) hash.update(`wheel ${f} ${statSync(join(wheels, f)).size}\n`);
const want = hash.digest("hex");
if (existsSync(python) && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === want) process.exit(0);

// pip's output is kept and shown only when a step fails (it is noisy with an offline mirror).
function run(cmd, args, optional = false) {
  const r = spawnSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"], cwd: root, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (optional && (r.error || r.status !== 0)) {
    process.stderr.write((r.stdout ?? "") + (r.stderr ?? ""));
    console.error(`dpalign: could not install the optional Opacus backend (\`${cmd} ${args.join(" ")}\`); continuing without it`);
    return;
  }
  if (r.error) {
    console.error(`dpalign: could not run ${cmd}: ${r.error.message}. Install Python 3.11 (python3 with venv) or set DPALIGN_PYTHON.`);
    process.exit(1);
  }
  if (r.status !== 0) {
    process.stderr.write(r.stdout + r.stderr);
    console.error(`dpalign: \`${cmd} ${args.join(" ")}\` failed with exit code ${r.status}.`);
    process.exit(1);
  }
}

const base = process.env.PYTHON ?? "python3";
console.log(`dpalign: preparing the Python worker environment in ${venv} (first time only, about a minute)`);
if (!existsSync(python)) run(base, ["-m", "venv", venv]);
const pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--retries", "0", "--timeout", "5", "-q"];
run(pip[0], [...pip.slice(1), "-r", "requirements.txt"]);
run(pip[0], [...pip.slice(1), "--no-deps", "--no-build-isolation", "-e", "py_runtime"]);
if (opacusWheel) {
  console.log(`dpalign: installing the optional Opacus backend from ${wheels}`);
  run(pip[0], [...pip.slice(1), "--find-links", wheels, "opacus"], true); // optional: the demo runs without it
}
writeFileSync(stamp, want + "\n");
console.log("dpalign: Python environment ready");
