import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { Calibrator } from "../../../ts/pipeline/plan.js";
import type { ConfigInput } from "../../../ts/pipeline/config.js";

export function tmpDir(prefix = "dpalign-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

const POS = ["great", "wonderful", "loved", "excellent", "best", "fun"];
const NEG = ["awful", "boring", "worst", "terrible", "bad", "waste"];

/** A tiny IMDb-shaped data dir: train/test with labels and ratings, unsup without. */
export function writeTinyImdb(dir: string, n = { train: 40, test: 40, unsup: 40 }): string {
  mkdirSync(join(dir, "imdb"), { recursive: true });
  const line = (split: string, i: number, labeled: boolean) => {
    const pos = i % 2 === 0;
    const words = pos ? POS : NEG;
    // Every text is distinct (within and across splits): the private set is de-duplicated against the public ones.
    const text = `this movie was ${words[i % words.length]} and ${words[(i + 1) % words.length]}.<br /><br />I think it was ${words[(i + 2) % words.length]}, ${split} review ${i}.`;
    const rec: Record<string, unknown> = { id: `${split}/${labeled ? (pos ? "pos" : "neg") : "unsup"}/${i}`, text };
    if (labeled) {
      rec.label = pos ? 1 : 0;
      rec.rating = pos ? 8 : 2;
    }
    return JSON.stringify(rec);
  };
  for (const [split, count] of Object.entries(n)) {
    const lines = Array.from({ length: count }, (_, i) => line(split, i, split !== "unsup"));
    writeFileSync(join(dir, "imdb", `${split}.jsonl.gz`), gzipSync(lines.join("\n") + "\n"));
  }
  return dir;
}

/** A stand-in calibrator with a monotone closed form, for plan tests (the real one lives in ts/privacy). */
export const fakeCalibrator: Calibrator = {
  calibrateSigma: ({ q, steps, epsilon }) => (q * Math.sqrt(steps)) / epsilon + 0.5,
  epsilon: ({ q, steps, sigma }) => (q * Math.sqrt(steps)) / (sigma - 0.5),
  // Basic composition (epsilons add) of the closed form: each stage gets an equal share.
  splitSequential: ({ stages, epsilon }) => stages.map(({ q, steps }) => (q * Math.sqrt(steps)) / (epsilon / stages.length) + 0.5),
  composeSequential: ({ stages }) => stages.reduce((a, { q, steps, sigma }) => a + (steps ? (q * Math.sqrt(steps)) / (sigma - 0.5) : 0), 0),
};

/** A very small pipeline preset (seconds on a CPU): one-layer model, a handful of steps, every stage. */
export const TINY: ConfigInput = {
  name: "tiny",
  seed: 1,
  data: { pretrainDocs: 40, classifierTrain: 16, classifierHeldOut: 8, evalPrompts: 6, privateSize: 40 },
  model: { tiny: { nLayer: 1, nHead: 2, nEmbd: 32, nPositions: 48, vocabSize: 300 } },
  pretrain: { steps: 4, batchSize: 8, seqLen: 24, tokenizerDocs: 40 },
  reward: { steps: 3, batchSize: 8, maxTokens: 24 },
  privacy: { epsilon: 8, accountant: "rdp" },
  sft: { batchSize: 10, epochs: 1, maxTokens: 16 },
  ppo: { batchSize: 10, miniBatchSize: 5, epochs: 1, ppoEpochs: 2, responseTokens: [2, 4] },
  eval: { maxNewTokens: 4, samples: 2 },
  checkpointEvery: 1,
};

/** A ustar header for a regular file (tests build small archives with it). */
export function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, "utf8");
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(size.toString(8).padStart(11, "0") + "\0", 124);
  h.write("00000000000\0", 136);
  h.write("        ", 148);
  h.write("0", 156);
  h.write("ustar\0" + "00", 257);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
}

/** A tar archive of text files, in order. */
export function makeTar(files: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, text] of Object.entries(files)) {
    const data = Buffer.from(text, "utf8");
    parts.push(tarHeader(name, data.length), data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
