// Loads the shared reference vectors (../shared/reference/privacy/vectors.json from the repo root,
// or $DPALIGN_SHARED_DIR/reference/privacy/vectors.json).
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const shared = process.env.DPALIGN_SHARED_DIR ?? join(root, "..", "shared");

export interface SingleVector {
  sample_rate: number;
  noise_multiplier: number;
  steps: number;
  delta: number;
  rdp_opacus: { epsilon: number; best_order: number };
  rdp_values: Record<string, number>;
  prv_accountant: { eps_low: number; eps_estimate: number; eps_upper: number } | null;
  pld_dp_accounting: { epsilon: number; value_discretization_interval: number } | null;
}
export interface CalibrationVector {
  target_epsilon: number;
  delta: number;
  sample_rate: number;
  steps: number;
  sigma_rdp_opacus: number;
  sigma_prv_opacus: number;
}
export interface CompositionVector {
  mechanisms: { sample_rate: number; noise_multiplier: number; steps: number }[];
  delta: number;
  rdp_opacus: { epsilon: number; best_order: number };
  pld_dp_accounting: { epsilon: number };
}
export interface Vectors {
  sources: Record<string, string>;
  single: SingleVector[];
  calibration: CalibrationVector[];
  composition: CompositionVector[];
}

export const vectors: Vectors = JSON.parse(readFileSync(join(shared, "reference", "privacy", "vectors.json"), "utf8"));
export const label = (s: { sample_rate: number; noise_multiplier: number; steps: number }): string => `q=${s.sample_rate} sigma=${s.noise_multiplier} T=${s.steps}`;
