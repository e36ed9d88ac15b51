"""Held-out perplexity (ts/pipeline/stages/lm-eval.ts) scores each text as query = its first token,
response = the rest: the summed log-probs must be the text's causal-LM log-likelihood, the same
quantity the SFT and pre-training loss averages, whatever the padding of the batch."""
from __future__ import annotations

import math

import torch
from conftest import make_model, perturb_lora

from dpalign_worker.engine.generation import score
from dpalign_worker.engine.losses import causal_lm_loss


def rows(seed: int = 3) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 290, (int(n),), generator=g).tolist() for n in (2, 5, 9, 13, 7)]


def pad(seqs: list[list[int]], value: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    w = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), w), value, dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s in seqs])


def test_scored_log_likelihood_is_the_causal_lm_loss_of_each_text(tok_dir):
    m = make_model(tok_dir, optimizer=None)
    perturb_lora(m)  # a model whose adapter matters, as after SFT
    texts = rows()
    q, ql = pad([t[:1] for t in texts])
    r, rl = pad([t[1:] for t in texts])
    lp = score(m, {"query_ids": q, "query_lengths": ql, "response_ids": r, "response_lengths": rl}, True, False, False)["logprobs"]
    nll_scored = [-float(lp[i, : len(t) - 1].sum()) for i, t in enumerate(texts)]

    m.model.eval()
    with torch.no_grad():
        for i, t in enumerate(texts):
            # one text alone, no padding: the reference log-likelihood
            ids = torch.tensor([t])
            logits = m.model(ids)["logits"]
            ref = -float(torch.log_softmax(logits.float(), -1)[0, :-1].gather(-1, ids[0, 1:, None]).sum())
            assert math.isclose(nll_scored[i], ref, rel_tol=1e-5, abs_tol=1e-5)

        ids, lens = pad(texts)
        mask = (torch.arange(ids.shape[1])[None, :] < lens[:, None]).float()
        mask[:, 0] = 0  # the first token is context only, as in the control plane's lmBatch
        per_text = causal_lm_loss(m.model(ids)["logits"], ids, mask)
    for i, t in enumerate(texts):
        # the training loss is the per-text mean over its predicted tokens
        assert math.isclose(float(per_text[i]) * (len(t) - 1), nll_scored[i], rel_tol=1e-5, abs_tol=1e-5)


def test_a_trained_text_is_more_likely_than_before(tok_dir):
    """Sanity of the direction: perplexity falls on text the model was fitted to."""
    from dpalign_worker.engine.dp_step import DpConfig, train_step

    m = make_model(tok_dir, train_base=True)
    text = rows(5)[3]
    q, ql = pad([text[:1]])
    r, rl = pad([text[1:]])
    batch = {"query_ids": q, "query_lengths": ql, "response_ids": r, "response_lengths": rl}
    before = -float(score(m, batch, True, False, False)["logprobs"].sum())
    ids, lens = pad([text])
    mask = torch.ones_like(ids, dtype=torch.float32)
    for _ in range(20):
        train_step(m, "causal_lm", {"input_ids": ids, "lengths": lens, "loss_mask": mask}, DpConfig(enabled=False, max_grad_norm=0.0), lr=1e-2)
    after = -float(score(m, batch, True, False, False)["logprobs"].sum())
    assert after < before * 0.8
