/**
 * Compile-time checks of the types derived from the generated protocol types (ts/protocol/
 * messages.ts). Not a test file: typecheck.test.ts compiles it with tsc; a line marked
 * @ts-expect-error must not compile.
 */
import type { DpSpec, ErrorMessage, HandshakeReply, ModelSpec, ReplyOf, RequestOf, TrainStepReply } from "../../../ts/protocol/messages.js";
import type { Tensor, TensorMap } from "../../../ts/protocol/tensor.js";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
const yes = <T extends true>(): T | undefined => undefined;

// Requests: every field optional, nested messages mapped, tensors as Tensor / TensorMap.
yes<Equal<DpSpec["enabled"], boolean | undefined>>();
yes<Equal<RequestOf<"trainStep">["batch"], TensorMap | undefined>>();
yes<Equal<NonNullable<ModelSpec["tiny"]>["nLayer"], number | undefined>>();
yes<Equal<RequestOf<"ping">, {}>>();
// @ts-expect-error a string where the schema has a string field only
const badHandle: RequestOf<"unloadModel"> = { handle: 3 };
// @ts-expect-error a field the schema does not have
const badField: RequestOf<"unloadModel"> = { handle: "p", extra: 1 };

// Replies: every field present; enums as their value names; maps as records.
yes<Equal<TrainStepReply["step"], number>>();
yes<Equal<TrainStepReply["metrics"], Record<string, number>>>();
yes<Equal<TrainStepReply["gradNormQuantiles"], number[]>>();
yes<Equal<ReplyOf<"tokenize">, TensorMap>>();
yes<Equal<ReplyOf<"echo">["payload"], Uint8Array>>();
yes<Equal<ReplyOf<"generate">["batch"], Record<string, Tensor>>>();
yes<Equal<HandshakeReply["capabilities"]["packages"], Record<string, string>>>();
const code: ErrorMessage["code"] = "PROTOCOL_MISMATCH";
// @ts-expect-error not an ErrorCode value
const badCode: ErrorMessage["code"] = "NO_SUCH_CODE";

export { badHandle, badField, code, badCode };
