/**
 * Where the data lives: --data-dir, then DPALIGN_DATA_DIR, then the project's defaults
 * (`<projectRoot>/../shared/data`, then `<projectRoot>/.dpalign-cache/data` where
 * `dpalign data fetch` writes by default). Data is never copied into the repository.
 */
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { projectRoot } from "../../util/python.js";
import { DataError } from "../../util/errors.js";

export const DEFAULT_DATA_DIRS: readonly string[] = [
  resolve(projectRoot, "..", "shared", "data"),
  join(projectRoot, ".dpalign-cache", "data"),
];

export const DEFAULT_FETCH_DIR = join(projectRoot, ".dpalign-cache", "data");

export interface DataDirSource {
  flag?: string;
  env?: Record<string, string | undefined>;
  defaults?: readonly string[];
}

/** The data directory holding `imdb/`, and where it came from (for the run record). */
export function resolveDataDir(src: DataDirSource = {}): { dir: string; from: "flag" | "env" | "default" } {
  const env = src.env ?? process.env;
  if (src.flag) return checked(resolve(src.flag), "flag", "--data-dir");
  if (env.DPALIGN_DATA_DIR) return checked(resolve(env.DPALIGN_DATA_DIR), "env", "DPALIGN_DATA_DIR");
  const defaults = src.defaults ?? DEFAULT_DATA_DIRS;
  for (const d of defaults) if (existsSync(join(d, "imdb"))) return { dir: d, from: "default" };
  throw new DataError(
    `no IMDb data found in ${defaults.join(" or ")}; pass --data-dir, set DPALIGN_DATA_DIR, or run \`dpalign data fetch imdb\``,
  );
}

function checked(dir: string, from: "flag" | "env", what: string): { dir: string; from: "flag" | "env" } {
  checkDataDir(dir, what);
  return { dir, from };
}

/**
 * Checks a data directory given by the user (`what`: "--data-dir" or "DPALIGN_DATA_DIR") exists
 * and is a directory; the CLI runs it on the flag before anything else, so that a dry run fails too.
 */
export function checkDataDir(dir: string, what = "--data-dir"): string {
  if (!existsSync(dir)) throw new DataError(`${what} points to ${dir}, which does not exist; give the directory that holds imdb/ (see \`dpalign data fetch --help\`)`);
  if (!statSync(dir).isDirectory()) throw new DataError(`${what} points to ${dir}, which is not a directory; give the directory that holds imdb/`);
  return dir;
}
