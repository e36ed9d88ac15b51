import { describe, expect, it, vi } from "vitest";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import yargs from "yargs";
import { register as registerRun } from "../../../ts/cli/commands/run.js";
import { register as registerSweep } from "../../../ts/cli/commands/sweep.js";
import { applyOverrides, CONFIG_DIR } from "../../../ts/cli/commands/pipeline-common.js";
import { loadConfigFile, parseConfig } from "../../../ts/pipeline/config.js";
import { IMDB_SIZES, stagesOf, planRun } from "../../../ts/pipeline/plan.js";
import { accountantCalibrator } from "../../../ts/pipeline/privacy.js";
import { tmpDir } from "./helpers.js";

async function cli(argv: string[]): Promise<{ out: string; err?: Error }> {
  let out = "";
  const spy = vi.spyOn(process.stdout, "write").mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  try {
    let y = yargs(argv).strict().exitProcess(false).fail((msg, err) => { throw err ?? new Error(msg); });
    y = registerSweep(registerRun(y));
    await y.parseAsync();
    return { out };
  } catch (e) {
    return { out, err: e as Error };
  } finally {
    spy.mockRestore();
  }
}

describe("configs/", () => {
  const files = readdirSync(CONFIG_DIR).filter((f) => f.endsWith(".yaml"));
  it("has the demo, a tiny sweep and the paper's three models", () => {
    expect(files).toEqual(expect.arrayContaining(["demo.yaml", "sweep-tiny.yaml", "paper-gpt2.yaml", "paper-gpt2-medium.yaml", "paper-gpt2-large.yaml"]));
  });
  it.each(files)("%s validates and plans at every epsilon of its sweep", (f) => {
    const cfg = loadConfigFile(join(CONFIG_DIR, f));
    for (const eps of cfg.sweep.epsilons) {
      // scenario reward-model plans from the pair count of its file (2,307 usable HH-RLHF pairs)
      const p = planRun({ ...cfg, privacy: { ...cfg.privacy, epsilon: eps, accountant: "rdp" } }, accountantCalibrator, { ...IMDB_SIZES, pairs: 2307 });
      if (Number.isFinite(eps)) for (const st of stagesOf(p)) expect(st.epsilonPlanned).toBeLessThanOrEqual(eps * (1 + 1e-6));
    }
  });
});

describe("dpalign run --dry-run", () => {
  it("prints the calibrated sigma per stage and the planned steps (paper GPT-2 settings)", async () => {
    const { out, err } = await cli(["run", join(CONFIG_DIR, "paper-gpt2.yaml"), "--dry-run", "--set", "privacy.accountant=rdp"]);
    expect(err).toBeUndefined();
    expect(out).toMatch(/\|D\| 25000, \|D1\| 12500/);
    expect(out).toMatch(/SFT: N 12500, expected batch 512, q 0\.04096, batches 977, .*sigma \d/);
    expect(out).toMatch(/PPO: N 12500, expected batch 256, q 0\.02048, batches 4883, .*sigma \d/);
    expect(out).toMatch(/delta 4\.000e-5 \(1\/\|D\|\).*\n[^]*the default min\(1\/\|D\|\^1\.1, 1e-6\) is safer/);
  });
  it("names the field of a malformed config", async () => {
    const f = join(tmpDir(), "bad.yaml");
    writeFileSync(f, "ppo:\n  miniBatchSize: 0\n  klControl: adaptive\nsft:\n  batchsize: 3\n");
    const { err } = await cli(["run", f, "--dry-run"]);
    expect(err?.message).toMatch(/bad\.yaml: invalid config/);
    expect(err?.message).toMatch(/ppo\.miniBatchSize/);
    expect(err?.message).toMatch(/sft: unknown field\(s\) "batchsize"/);
  });
  it("refuses DP-mode coupling in a config that parses", async () => {
    const f = join(tmpDir(), "adaptive.yaml");
    writeFileSync(f, "data: { privateSize: 1000 }\nsft: { batchSize: 50 }\nppo: { batchSize: 100, miniBatchSize: 50, klControl: adaptive }\n");
    const { err } = await cli(["run", f, "--dry-run"]);
    expect(err?.message).toMatch(/ppo\.klControl: "adaptive" .* refused in DP mode/);
  });
  it("applies --set overrides with validation", () => {
    const cfg = applyOverrides(parseConfig({}), ["privacy.epsilon=inf", "ppo.ppoEpochs=2"], "x");
    expect(cfg.privacy.epsilon).toBe(Infinity);
    expect(cfg.ppo.ppoEpochs).toBe(2);
    expect(() => applyOverrides(parseConfig({}), ["ppo.ppoEpochs=zero"], "x")).toThrow(/ppo\.ppoEpochs/);
    expect(() => applyOverrides(parseConfig({}), ["nonsense"], "x")).toThrow(/field\.path=value/);
    expect(() => applyOverrides(parseConfig({}), ["privacy.epsilon=1e9"], "x")).toThrow(/privacy\.epsilon: must be in \(0, 100\]/);
  });
  it("refuses a --data-dir that is not there, though a dry run reads no data", async () => {
    const { out, err } = await cli(["run", join(CONFIG_DIR, "demo.yaml"), "--dry-run", "--data-dir", "/nonexistent/data"]);
    expect(err?.message).toMatch(/--data-dir points to \/nonexistent\/data, which does not exist/);
    expect(out).toBe("");
    const file = join(tmpDir(), "file");
    writeFileSync(file, "x");
    expect((await cli(["sweep", join(CONFIG_DIR, "sweep-tiny.yaml"), "--dry-run", "--data-dir", file])).err?.message).toMatch(/which is not a directory/);
  });
  it("names a config path that is a directory", async () => {
    const { err } = await cli(["run", tmpDir(), "--dry-run"]);
    expect(err?.message).toMatch(/: is a directory; give a YAML or JSON config file/);
  });
});
