import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain .mjs script without declarations
import { generate } from "../../../scripts/gen-proto-ts.mjs";
import { projectRoot } from "../../../ts/util/python.js";

describe("generated protocol types", () => {
  it("ts/protocol/generated/worker.d.ts is up to date with proto/ (else run `npm run gen:proto`)", async () => {
    const committed = readFileSync(join(projectRoot, "ts", "protocol", "generated", "worker.d.ts"), "utf8");
    expect(committed === (await generate()), "ts/protocol/generated/worker.d.ts is stale: run `npm run gen:proto`").toBe(true);
  });

  it("the derived message types and the codec test's typed bodies compile", () => {
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
    try {
      execFileSync(process.execPath, [tsc, "-p", join(projectRoot, "test", "ts", "protocol", "tsconfig.json")], { encoding: "utf8" });
    } catch (e) {
      throw new Error(`tsc failed:\n${(e as { stdout?: string }).stdout ?? e}`);
    }
  });
});
