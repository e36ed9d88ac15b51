import type { Argv } from "yargs";
import { resolve } from "node:path";
import { plot } from "../../pipeline/plot.js";

export function register(cli: Argv): Argv {
  return cli.command(
    "plot <dir>",
    "Render the charts of a run directory (epsilon spent per stage, evaluation reward per model) or a sweep root (privacy-utility curve; ROUGE-L and reward-model accuracy where present) into DIR/plots/ as SVG (and PNG), from released files only; report.md / table.md embed them",
    (y) =>
      y
        .positional("dir", { type: "string", demandOption: true, describe: "a run directory (ledger.jsonl, summary.json) or a sweep root (table.json)" })
        .option("png", { type: "boolean", default: true, describe: "also write PNGs (through @resvg/resvg-js; --no-png for SVG only)" })
        .option("json", { type: "boolean", default: false, describe: "print one JSON object" }),
    async (args) => {
      const dir = resolve(String(args.dir));
      const r = await plot(dir, { png: args.png as boolean });
      if (args.json) {
        process.stdout.write(JSON.stringify(r, null, 2) + "\n");
        return;
      }
      const lines = [`${r.kind} ${r.dir}: ${r.charts.length} chart(s) from ${r.read.join(", ")}`];
      for (const c of r.charts) lines.push(`  ${c.title}: ${c.svg}${c.png ? `, ${c.png}` : ""}`);
      for (const s of r.skipped) lines.push(`  not drawn: ${s}`);
      if (r.pngUnavailable) lines.push(`  ${r.pngUnavailable}`);
      process.stdout.write(lines.join("\n") + "\n");
    },
  );
}
