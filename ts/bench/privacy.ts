/**
 * Privacy accounting benchmark (`npm run bench:privacy`): time to a tight epsilon for T = 1e3,
 * 1e4, 1e5 and to calibrate sigma for T = 977 and 4883. Each figure is the median of 5 cold runs
 * (discretisation caches cleared) after one warm-up run.
 */
import { clearNumericalCache } from "../privacy/analysis/numerical.js";
import { calibrateSigma, epsilon } from "../privacy/index.js";

function time<T>(f: () => T, reps = 5): { ms: number; value: T } {
  f(); // warm-up (JIT, FFT tables)
  const ms: number[] = [];
  let value!: T;
  for (let i = 0; i < reps; i++) {
    clearNumericalCache();
    const t = performance.now();
    value = f();
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return { ms: ms[Math.floor(reps / 2)], value };
}

const rows: string[] = [];
const add = (what: string, ms: number, result: string): void => {
  rows.push(`${what.padEnd(52)} ${ms.toFixed(1).padStart(8)} ms   ${result}`);
};

for (const [q, sigma] of [
  [0.01, 1.0],
  [0.04096, 1.0],
]) {
  for (const steps of [1e3, 1e4, 1e5]) {
    const delta = 1e-5;
    const r = time(() => epsilon({ mechanisms: [{ q, sigma, steps }], delta, accountant: "prv" }));
    add(`epsilon prv  q=${q} sigma=${sigma} T=${steps}`, r.ms, `eps ${r.value.epsilon.toFixed(4)} ± ${r.value.error.toExponential(1)}`);
    const d = time(() => epsilon({ mechanisms: [{ q, sigma, steps }], delta, accountant: "rdp" }));
    add(`epsilon rdp  q=${q} sigma=${sigma} T=${steps}`, d.ms, `eps ${d.value.epsilon.toFixed(4)}`);
  }
}
for (const [q, steps, target] of [
  [0.04096, 977, 1],
  [0.04096, 977, 4],
  [0.02048, 4883, 1],
  [0.02048, 4883, 4],
]) {
  const delta = 4e-5;
  const r = time(() => calibrateSigma({ q, steps, targetEpsilon: target, delta, accountant: "prv" }));
  add(`calibrate prv q=${q} T=${steps} eps=${target}`, r.ms, `sigma ${r.value.sigma.toFixed(5)} -> eps ${r.value.result.epsilon.toFixed(5)} (${r.value.evaluations} evals)`);
  const d = time(() => calibrateSigma({ q, steps, targetEpsilon: target, delta, accountant: "rdp" }));
  add(`calibrate rdp q=${q} T=${steps} eps=${target}`, d.ms, `sigma ${d.value.sigma.toFixed(5)} -> eps ${d.value.result.epsilon.toFixed(5)}`);
}
process.stdout.write(`privacy accounting (node ${process.version}, median of 5 cold runs)\n${rows.join("\n")}\n`);
