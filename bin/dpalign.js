#!/usr/bin/env node
// Thin launcher: the CLI is compiled from ts/ into dist/ by `npm install` (prepare) or `npm run build`.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const entry = join(root, "dist", "cli", "main.js");
if (!existsSync(entry)) {
  process.stderr.write(`dpalign: the CLI is not built (${entry} is missing). Run \`npm install\` or \`npm run build\` in ${root}.\n`);
  process.exit(1);
}
await import(entry);
