// `dpalign privacy ...` parsed and run in-process.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import yargs from "yargs";
import { register } from "../../../ts/cli/commands/privacy.js";
import { PrivacyLedger } from "../../../ts/privacy/index.js";
import { InvalidArgumentError } from "../../../ts/util/errors.js";

async function run(argv: string[]): Promise<string> {
  let printed = "";
  const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    printed += String(chunk);
    return true;
  });
  try {
    const cli = register(
      yargs(argv)
        .strict()
        .exitProcess(false)
        .fail((msg, err) => {
          throw err ?? new InvalidArgumentError("arguments", msg);
        }),
    );
    await cli.parseAsync();
  } finally {
    spy.mockRestore();
  }
  return printed;
}

afterEach(() => {
  process.exitCode = undefined;
});

describe("dpalign privacy", () => {
  it("epsilon --json prints epsilon and the error bound", async () => {
    const out = JSON.parse(await run(["privacy", "epsilon", "--sample-rate", "0.04", "--noise-multiplier", "1.5", "--steps", "2250", "--delta", "1e-5", "--accountant", "rdp", "--json"]));
    expect(out.epsilon).toBeCloseTo(7.32911117143, 8);
    expect(out.best_order).toBe(3.9);
    const prv = JSON.parse(await run(["privacy", "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1", "--steps", "1000", "--delta", "1e-5", "--json"]));
    expect(prv.accountant).toBe("prv");
    expect(prv.epsilon).toBeCloseTo(1.8282, 3);
    expect(prv.error).toBeGreaterThan(0);
    expect(prv.error).toBeLessThan(0.01);
  });

  it("epsilon prints a readable line", async () => {
    const out = await run(["privacy", "epsilon", "--sample-rate", "1", "--noise-multiplier", "2", "--steps", "1", "--delta", "1e-5", "--accountant", "pld"]);
    expect(out).toMatch(/^epsilon 1\.99309\d* .*\[pld\]/);
  });

  it("calibrate --json prints noise_multiplier", async () => {
    const out = JSON.parse(await run(["privacy", "calibrate", "--sample-rate", "0.04096", "--steps", "977", "--target-epsilon", "4", "--delta", "4e-5", "--json"]));
    expect(out.noise_multiplier).toBeGreaterThan(1.49);
    expect(out.noise_multiplier).toBeLessThan(1.5009);
    expect(out.epsilon).toBeLessThanOrEqual(4);
  });

  it("compose reads a plan and a ledger", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dpalign-cli-"));
    const plan = join(dir, "plan.yaml");
    writeFileSync(plan, "target_epsilon: 2\ndelta: 1.0e-5\ncomposition: parallel\naccountant: rdp\nstages:\n  - {stage: sft, q: 0.01, steps: 300}\n  - {stage: ppo, q: 0.02, steps: 100, reuse: 2}\n");
    const out = JSON.parse(await run(["privacy", "compose", "--plan", plan, "--json"]));
    expect(out.epsilon).toBeLessThanOrEqual(2);
    expect(out.within_target).toBe(true);
    expect(out.plan.stages).toHaveLength(2);
    const ledgerPath = join(dir, "ledger.jsonl");
    new PrivacyLedger(ledgerPath).append({ stage: "sft", q: 0.01, sigma: 1, clip: 1, steps: 1000, accountant: "prv", noise: "secure" });
    const led = JSON.parse(await run(["privacy", "compose", "--ledger", ledgerPath, "--delta", "1e-5", "--target-epsilon", "1", "--json"]));
    expect(led.epsilon).toBeCloseTo(1.8282, 3);
    expect(led.within_target).toBe(false);
    expect(process.exitCode).toBe(3);
    const human = await run(["privacy", "compose", "--ledger", ledgerPath, "--delta", "1e-5"]);
    expect(human).toMatch(/sequential composition: epsilon 1\.828/);
  });

  it("bad arguments are clear errors", async () => {
    const base = ["privacy", "epsilon", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"];
    await expect(run([...base, "--sample-rate", "0"])).rejects.toThrow(/sample-rate: must be in \(0, 1\]/);
    await expect(run([...base, "--sample-rate", "1.5"])).rejects.toThrow(/sample-rate/);
    await expect(run(["privacy", "epsilon", "--sample-rate", "0.1", "--noise-multiplier", "0", "--steps", "10", "--delta", "1e-5"])).rejects.toThrow(/noise-multiplier: must be in \[0\.05, 10000\]/);
    await expect(run(["privacy", "epsilon", "--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "10.5", "--delta", "1e-5"])).rejects.toThrow(/steps: must be an integer in \[0, 100000000\]/);
    await expect(run(["privacy", "epsilon", "--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "1"])).rejects.toThrow(/delta: must be in \[1e-10, 0\.1\]/);
    await expect(run(["privacy", "epsilon", "--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5", "--accountant", "gdp"])).rejects.toThrow(/supported: rdp, pld, prv/);
    await expect(run(["privacy", "calibrate", "--sample-rate", "0.1", "--steps", "10", "--target-epsilon", "-1", "--delta", "1e-5"])).rejects.toThrow(/target-epsilon/);
    await expect(run(["privacy", "compose", "--delta", "1e-5"])).rejects.toThrow(/--ledger FILE and\/or --plan FILE/);
  });

  it("absurd parameters are range errors naming the flag and its range", async () => {
    const eps = (over: Record<string, string>) => {
      const a: Record<string, string> = { "sample-rate": "0.01", "noise-multiplier": "1", steps: "100", delta: "1e-5", ...over };
      return run(["privacy", "epsilon", ...Object.entries(a).flatMap(([k, v]) => [`--${k}`, v])]);
    };
    await expect(eps({ steps: "1e12" })).rejects.toThrow(/^steps: must be an integer in \[0, 100000000\], got 1000000000000$/);
    await expect(eps({ "noise-multiplier": "1e-6" })).rejects.toThrow(/^noise-multiplier: must be in \[0\.05, 10000\]/);
    await expect(eps({ "noise-multiplier": "1e6" })).rejects.toThrow(/^noise-multiplier: must be in \[0\.05, 10000\]/);
    await expect(eps({ reuse: "1e15" })).rejects.toThrow(/^reuse: must be an integer in \[1, 10000\]/);
    await expect(eps({ reuse: "1000" })).rejects.toThrow(/^reuse: noise-multiplier \/ sqrt\(reuse\) = .* must be at least 0\.05/);
    await expect(eps({ delta: "0.9999999" })).rejects.toThrow(/^delta: must be in \[1e-10, 0\.1\]/);
    await expect(eps({ delta: "1e-30" })).rejects.toThrow(/^delta: must be in \[1e-10, 0\.1\]/);
    const cal = (target: string) => run(["privacy", "calibrate", "--sample-rate", "0.01", "--steps", "100", "--target-epsilon", target, "--delta", "1e-5"]);
    await expect(cal("1e9")).rejects.toThrow(/^target-epsilon: must be in \(0, 100\], got 1000000000$/);
    await expect(cal("inf")).rejects.toThrow(/^target-epsilon: must be in \(0, 100\], got Infinity \(a non-private run/);
    await expect(cal("four")).rejects.toThrow(/^target-epsilon: must be a number, got "four"$/);
    await expect(run(["privacy", "compose", "--ledger", "/nonexistent/ledger.jsonl", "--delta", "1e-5"])).rejects.toThrow(/^ledger: \/nonexistent\/ledger\.jsonl: no such file/);
  });

  it("calibration stays inside the accepted noise range", async () => {
    // q * steps below delta: every multiplier meets the target; the floor is returned, not 0.
    const floor = JSON.parse(await run(["privacy", "calibrate", "--sample-rate", "1e-6", "--steps", "2", "--target-epsilon", "1", "--delta", "1e-5", "--json"]));
    expect(floor.noise_multiplier).toBe(0.05);
    expect(floor.epsilon).toBeLessThanOrEqual(1);
    // the largest target calibrates above the floor
    const loose = JSON.parse(await run(["privacy", "calibrate", "--sample-rate", "1", "--steps", "1", "--target-epsilon", "100", "--delta", "1e-5", "--json"]));
    expect(loose.noise_multiplier).toBeGreaterThan(0.05);
    expect(loose.epsilon).toBeLessThanOrEqual(100);
  });

  it("a composition far beyond any meaningful epsilon gets the RDP bound, not a numerical figure", async () => {
    const out = JSON.parse(await run(["privacy", "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "0.05", "--steps", "1e7", "--delta", "1e-5", "--json"]));
    expect(out.accountant).toBe("rdp");
    expect(out.epsilon).toBeGreaterThan(1e4);
  });
});
