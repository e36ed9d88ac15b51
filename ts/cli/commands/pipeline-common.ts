/** Helpers shared by the pipeline commands (run, demo, sweep, pretrain): config loading with overrides. */
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { deepMerge, loadConfigFile, parseConfig, type Config } from "../../pipeline/config.js";
import { ConfigError } from "../../util/errors.js";
import { projectRoot } from "../../util/python.js";
import { checkDataDir } from "../../pipeline/data/dir.js";

/** Applies `--set a.b=value` overrides (values parsed as YAML scalars) and re-validates. */
export function applyOverrides(cfg: Config, sets: readonly string[], where: string): Config {
  if (sets.length === 0) return cfg;
  let raw: unknown = JSON.parse(JSON.stringify(cfg, (_k, v) => (v === Infinity ? "inf" : v)));
  for (const s of sets) {
    const eq = s.indexOf("=");
    if (eq <= 0) throw new ConfigError(`--set ${s}: expected field.path=value`);
    const path = s.slice(0, eq).split(".");
    let value: unknown = parseYaml(s.slice(eq + 1));
    for (let i = path.length - 1; i >= 0; i--) value = { [path[i]]: value };
    raw = deepMerge(raw, value);
  }
  return parseConfig(raw, `${where} with --set`);
}

export function loadWithOverrides(file: string, sets: readonly string[] = []): Config {
  return applyOverrides(loadConfigFile(file), sets, file);
}

export const CONFIG_DIR = join(projectRoot, "configs");

/** --data-dir as given, once checked to be an existing directory. */
function dataDirFlag(dir: string): string {
  checkDataDir(resolve(dir));
  return dir;
}

export const commonOptions = {
  // Checked when parsed, so that --dry-run (which reads no data) refuses a directory that is not there too.
  "data-dir": { type: "string", coerce: dataDirFlag, describe: "data directory holding imdb/ (else DPALIGN_DATA_DIR, else ../shared/data)" },
  "cache-dir": { type: "string", describe: "cache of pretrained models and reward classifiers (default .dpalign-cache/)" },
  set: { type: "string", array: true, default: [] as string[], describe: "override a config field, e.g. --set privacy.epsilon=8 (repeatable)" },
} as const;

/** --workers N: data-parallel workers on this machine, the same as --set workers=N (README: Several workers). */
export const workersOption = {
  workers: { type: "number", describe: "data-parallel workers on this machine (config `workers`, default 1): each batch is split over them, the noise added once" },
} as const;

/** The --set overrides with --workers appended (it wins over a --set workers=...). */
export function withWorkers(sets: readonly string[], workers: unknown): string[] {
  return workers === undefined ? [...sets] : [...sets, `workers=${String(workers)}`];
}

/** A worker started by hand (`dpalign worker`, possibly on another machine) instead of a spawned one: ts/worker/connect.ts. */
export const workerOptions = {
  "worker-endpoint": {
    type: "string", array: true,
    describe: "use the worker started by hand at tcp://HOST:PORT (`dpalign worker --endpoint tcp://0.0.0.0:PORT --keys DIR` there) instead of spawning one; repeat for data-parallel ranks (the first is rank 0); workers must see the run directory and model cache at the same paths (README: Remote workers)",
  },
  "worker-keys": { type: "string", describe: "the `dpalign worker keygen` directory holding worker.pub and client.key (CurveZMQ; needed unless the worker listens on a loopback address)" },
  "worker-timeout": { type: "number", default: 30, describe: "seconds to wait for a remote worker's handshake" },
  "worker-rendezvous": { type: "string", describe: "several --worker-endpoint: HOST:PORT where the ranks meet, on the first worker's machine (default: its endpoint's host, port + 1)" },
} as const;
