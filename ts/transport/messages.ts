/**
 * TypeScript shapes of the protocol messages in proto/dpalign/worker/v1/worker.proto, in the
 * camelCase form protobufjs uses. Tensor fields appear here as `Tensor` / `TensorMap`; the codec
 * converts them to and from the wire form.
 */
import type { TensorMap } from "./tensor.js";

export interface ErrorMessage {
  code: string;
  message: string;
  details: Record<string, string>;
}

export interface Capabilities {
  pythonVersion: string;
  torchVersion: string;
  device: string;
  devices: string[];
  backends: string[];
  methods: string[];
  packages: Record<string, string>;
}

export interface HandshakeRequest { protocolVersion: number; client: string; heartbeatIntervalMs?: number }
export interface HandshakeReply { protocolVersion: number; workerVersion: string; pid: number; capabilities: Capabilities; heartbeatIntervalMs: number }
export interface EchoRequest { batch?: TensorMap; payload?: Uint8Array; sleepMs?: number; raiseError?: string }
export interface EchoReply { batch: TensorMap; payload: Uint8Array }

export interface LoraSpec { rank: number; alpha: number; dropout?: number; targetModules: string[] }
export interface TinyModelSpec { nLayer: number; nHead: number; nEmbd: number; nPositions: number; tokenizerDir: string }
export interface ModelSpec {
  tiny?: TinyModelSpec;
  hfPath?: string;
  entryPoint?: string;
  lora?: LoraSpec;
  valueHead?: boolean;
  rewardHead?: boolean;
  trainBase?: boolean;
  initCheckpoint?: string;
  device?: string;
  initSeed?: number;
  dtype?: string;
}
export interface OptimizerSpec { name: "adamw" | "sgd"; lr?: number; weightDecay?: number; beta1?: number; beta2?: number; eps?: number; momentum?: number }
export interface LoadModelRequest { handle: string; spec: ModelSpec; optimizer?: OptimizerSpec; backend?: string }
export interface ModelInfo {
  handle: string;
  totalParameters: number;
  trainableParameters: number;
  trainableNames: string[];
  vocabSize: number;
  maxPositions: number;
  eosTokenId: number;
  padTokenId: number;
  device: string;
  backend: string;
}

export interface TrainTokenizerRequest { texts: string[]; vocabSize: number; outDir: string }
export interface TrainTokenizerReply { dir: string; vocabSize: number }
export interface TokenizeRequest { handle: string; texts: string[]; maxTokens?: number; appendEos?: boolean }
export interface DecodeRequest { handle: string; batch: TensorMap }
export interface DecodeReply { texts: string[] }

export interface DpSpec {
  enabled: boolean;
  noiseMultiplier: number;
  maxGradNorm: number;
  expectedBatchSize: number;
  secureNoise: boolean;
  noiseSeed?: number;
}
export type LossName = "causal_lm" | "pairwise_reward" | "ppo" | "classification" | "dirac_canary";
export interface TrainStepRequest {
  handle: string;
  loss: LossName;
  batch: TensorMap;
  dp: DpSpec;
  microBatchSize?: number;
  lr: number;
  lossParams?: Record<string, number>;
}
export interface TrainStepReply {
  step: number;
  examples: number;
  loss: number;
  gradNormQuantiles: number[];
  fractionClipped: number;
  noiseMultiplier: number;
  maxGradNorm: number;
  dp: boolean;
  noiseMode: "secure" | "seeded" | "none" | string;
  noiseSeed: number;
  noiseStd: number;
  metrics: Record<string, number>;
}

export interface GenerateRequest {
  handle: string;
  prompts: TensorMap;
  maxNewTokens: number;
  minNewTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  returnLogprobs?: boolean;
  returnValues?: boolean;
}
export interface GenerateReply { batch: TensorMap; texts: string[] }

export interface ScoreSequencesRequest {
  handle: string;
  batch: TensorMap;
  logprobs?: boolean;
  values?: boolean;
  rewards?: boolean;
  microBatchSize?: number;
}

export interface SaveCheckpointRequest { handle: string; dir: string; metadata?: Record<string, string> }
export interface LoadCheckpointRequest { handle: string; dir: string }
export interface CheckpointInfo { dir: string; step: number; files: string[]; metadata: Record<string, string> }

/** Request and reply types per method: the keys are the names of Request.method's oneof fields. */
export interface Methods {
  handshake: [HandshakeRequest, HandshakeReply];
  ping: [Record<string, never>, { workerTimeS: number }];
  shutdown: [{ reason?: string }, Record<string, never>];
  echo: [EchoRequest, EchoReply];
  loadModel: [LoadModelRequest, ModelInfo];
  unloadModel: [{ handle: string }, Record<string, never>];
  trainTokenizer: [TrainTokenizerRequest, TrainTokenizerReply];
  tokenize: [TokenizeRequest, TensorMap];
  decode: [DecodeRequest, DecodeReply];
  trainStep: [TrainStepRequest, TrainStepReply];
  generate: [GenerateRequest, GenerateReply];
  scoreSequences: [ScoreSequencesRequest, TensorMap];
  saveCheckpoint: [SaveCheckpointRequest, CheckpointInfo];
  loadCheckpoint: [LoadCheckpointRequest, CheckpointInfo];
}
export type Method = keyof Methods;
export type RequestOf<M extends Method> = Methods[M][0];
export type ReplyOf<M extends Method> = Methods[M][1];
