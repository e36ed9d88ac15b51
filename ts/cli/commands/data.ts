import type { Argv } from "yargs";
import { dirname, join } from "node:path";
import { statSync } from "node:fs";
import { makeDir } from "../../util/fs.js";
import { convertImdbArchive, download, IMDB_URL } from "../../pipeline/data/fetch.js";
import { convertTldr, loadTldrPosts, tldrDownloads, TLDR_COMPARISON_BATCHES, TLDR_COMPARISONS_URL, TLDR_POSTS_URL } from "../../pipeline/data/tldr.js";
import { describeSkips, loadPreferences, PREFERENCE_FORMATS, type PreferenceFormat } from "../../pipeline/data/preferences.js";
import { DEFAULT_FETCH_DIR } from "../../pipeline/data/dir.js";
import { InvalidArgumentError } from "../../util/errors.js";

const DATASETS = ["imdb", "tldr"] as const;
const IMDB_ONLY = ["archive", "url"] as const;
const TLDR_ONLY = ["raw", "comparisons-url", "posts-url", "batches"] as const;
const CHECK_FORMATS = [...PREFERENCE_FORMATS, "tldr-posts"] as const;

/** --archive must be an existing regular file (else the tar reader would fail on a stream error). */
function checkArchive(archive: string): void {
  let isFile: boolean;
  try {
    isFile = statSync(archive).isFile();
  } catch {
    throw new InvalidArgumentError("--archive", `${archive}: no such file; give the downloaded aclImdb_v1.tar.gz, or drop --archive to download it`);
  }
  if (!isFile) throw new InvalidArgumentError("--archive", `${archive} is not a file; give the downloaded aclImdb_v1.tar.gz`);
}

/** Progress of one download on stderr, every 5%. */
function progress(what: string): (got: number, total: number) => void {
  let last = -1;
  return (got, total) => {
    const pct = total ? Math.floor((100 * got) / total) : -1;
    if (pct !== last && pct % 5 === 0) process.stderr.write(`download${what}: ${pct}% of ${(total / 1e6).toFixed(0)} MB\n`);
    last = pct;
  };
}

async function fetchImdb(args: Record<string, unknown>, out: string): Promise<void> {
  let archive = args.archive as string | undefined;
  if (archive !== undefined) checkArchive(archive);
  makeDir(out, "--out");
  if (!archive) {
    archive = join(out, "aclImdb_v1.tar.gz");
    await download((args.url as string | undefined) ?? IMDB_URL, archive, progress(""));
  }
  process.stderr.write(`converting ${archive} ...\n`);
  const counts = await convertImdbArchive(archive, out);
  process.stdout.write(`wrote ${join(out, "imdb")}: ${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(", ")}\n`);
}

async function fetchTldr(args: Record<string, unknown>, out: string): Promise<void> {
  const batchesArg = args.batches as string | undefined;
  const batches = batchesArg === undefined ? TLDR_COMPARISON_BATCHES : batchesArg.split(",").map((b) => b.trim()).filter((b) => b !== "");
  if (batches.length === 0) throw new InvalidArgumentError("--batches", "name at least one comparison batch, e.g. batch3,batch4");
  const raw = (args.raw as string | undefined) ?? join(out, "tldr", "raw");
  let downloads: { url: string; dest: string }[];
  try {
    downloads = tldrDownloads(raw, { batches, comparisonsUrl: args["comparisons-url"] as string | undefined, postsUrl: args["posts-url"] as string | undefined });
  } catch (e) {
    throw new InvalidArgumentError("--batches", (e as Error).message);
  }
  makeDir(out, "--out");
  for (const d of downloads) {
    makeDir(dirname(d.dest), "--raw");
    await download(d.url, d.dest, progress(` ${d.url.split("/").slice(-2).join("/")}`), `download it by hand to ${d.dest}`);
  }
  process.stderr.write(`converting ${raw} ...\n`);
  const c = await convertTldr(raw, out, { batches });
  process.stdout.write(
    `wrote ${join(out, "tldr")}: comparisons ${c.comparisons} (${c.otherComparisons} CNN/DM left out), posts train ${c.posts.train}, valid ${c.posts.valid}, test ${c.posts.test}\n`,
  );
}

export function register(cli: Argv): Argv {
  return cli.command("data", "Data commands", (y) =>
    y
      .command(
        "fetch <dataset>",
        "Download a published data set and convert it into the JSON-lines format the pipeline reads: imdb (aclImdb_v1.tar.gz), tldr (OpenAI summarize-from-feedback comparisons and the filtered Reddit TL;DR posts, into <out>/tldr/)",
        (z) =>
          z
            .positional("dataset", { type: "string", demandOption: true, describe: DATASETS.join(" | ") })
            .option("out", { type: "string", describe: `output data directory (default DPALIGN_DATA_DIR, else ${DEFAULT_FETCH_DIR})` })
            .option("archive", { type: "string", describe: "imdb: use an already downloaded archive instead of the network" })
            .option("url", { type: "string", describe: `imdb: the archive's URL (default ${IMDB_URL})` })
            .option("raw", { type: "string", describe: "tldr: directory of the downloaded files (comparisons/<batch>.json, tldr_3_filtered/{train,valid,test}.jsonl); files already there are not downloaded again (default <out>/tldr/raw)" })
            .option("comparisons-url", { type: "string", describe: `tldr: base URL of the comparison batches (default ${TLDR_COMPARISONS_URL})` })
            .option("posts-url", { type: "string", describe: `tldr: base URL of the filtered posts (default ${TLDR_POSTS_URL})` })
            .option("batches", { type: "string", describe: `tldr: comma-separated comparison batches (default ${TLDR_COMPARISON_BATCHES.join(",")})` }),
        async (args) => {
          const dataset = String(args.dataset);
          if (!(DATASETS as readonly string[]).includes(dataset)) throw new InvalidArgumentError("dataset", `unknown data set ${dataset}; supported: ${DATASETS.join(", ")}`);
          const foreign = dataset === "imdb" ? TLDR_ONLY : IMDB_ONLY;
          for (const k of foreign) if (args[k] !== undefined) throw new InvalidArgumentError(`--${k}`, `not an option of \`data fetch ${dataset}\` (it is for ${dataset === "imdb" ? "tldr" : "imdb"})`);
          const out = (args.out as string | undefined) ?? process.env.DPALIGN_DATA_DIR ?? DEFAULT_FETCH_DIR;
          if (dataset === "imdb") await fetchImdb(args, out);
          else await fetchTldr(args, out);
        },
      )
      .command(
        "check <format> <files..>",
        "Read preference or TL;DR files as the pipeline would and report the records: pairs, skipped records by reason and line, or the first malformed lines",
        (z) =>
          z
            .positional("format", { type: "string", demandOption: true, describe: CHECK_FORMATS.join(" | ") })
            .positional("files", { type: "string", array: true, demandOption: true, describe: ".jsonl or .jsonl.gz files" })
            .option("strict", { type: "boolean", default: false, describe: "refuse a file with records that are not a usable pair instead of skipping them" }),
        async (args) => {
          const format = String(args.format);
          if (!(CHECK_FORMATS as readonly string[]).includes(format)) throw new InvalidArgumentError("format", `unknown format ${format}; supported: ${CHECK_FORMATS.join(", ")}`);
          for (const f of args.files as string[]) {
            if (format === "tldr-posts") {
              const posts = await loadTldrPosts(f);
              process.stdout.write(`${f}: ${posts.length} post${posts.length === 1 ? "" : "s"}\n`);
              continue;
            }
            const l = await loadPreferences(format as PreferenceFormat, f, { strict: args.strict as boolean });
            process.stdout.write(describeSkips(l) + "\n");
          }
        },
      )
      .demandCommand(1, "Name a data command: fetch, check"),
  );
}
