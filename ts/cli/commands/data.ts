import type { Argv } from "yargs";
import { join } from "node:path";
import { statSync } from "node:fs";
import { makeDir } from "../../util/fs.js";
import { convertImdbArchive, download, IMDB_URL } from "../../pipeline/data/fetch.js";
import { DEFAULT_FETCH_DIR } from "../../pipeline/data/dir.js";
import { InvalidArgumentError } from "../../util/errors.js";

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

export function register(cli: Argv): Argv {
  return cli.command("data", "Data commands", (y) =>
    y
      .command(
        "fetch <dataset>",
        "Download the original IMDb archive (aclImdb_v1.tar.gz) and convert it into the JSON-lines format the pipeline reads",
        (z) =>
          z
            .positional("dataset", { type: "string", demandOption: true, describe: "imdb" })
            .option("out", { type: "string", describe: `output data directory (default DPALIGN_DATA_DIR, else ${DEFAULT_FETCH_DIR})` })
            .option("archive", { type: "string", describe: "use an already downloaded archive instead of the network" })
            .option("url", { type: "string", default: IMDB_URL }),
        async (args) => {
          if (args.dataset !== "imdb") throw new InvalidArgumentError("dataset", `unknown data set ${String(args.dataset)}; supported: imdb`);
          const out = (args.out as string | undefined) ?? process.env.DPALIGN_DATA_DIR ?? DEFAULT_FETCH_DIR;
          let archive = args.archive as string | undefined;
          if (archive !== undefined) checkArchive(archive);
          makeDir(out, "--out");
          if (!archive) {
            archive = join(out, "aclImdb_v1.tar.gz");
            let last = -1;
            await download(args.url as string, archive, (got, total) => {
              const pct = total ? Math.floor((100 * got) / total) : -1;
              if (pct !== last && pct % 5 === 0) process.stderr.write(`download: ${pct}% of ${(total / 1e6).toFixed(0)} MB\n`);
              last = pct;
            });
          }
          process.stderr.write(`converting ${archive} ...\n`);
          const counts = await convertImdbArchive(archive, out);
          process.stdout.write(`wrote ${join(out, "imdb")}: ${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(", ")}\n`);
        },
      )
      .demandCommand(1, "Name a data command: fetch"),
  );
}
