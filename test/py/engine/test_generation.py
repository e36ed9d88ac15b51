"""Generation and scoring: seeded reproducibility, padding independence, consistent log-probs."""
from __future__ import annotations

import torch
from conftest import lm_batch, make_model, perturb_lora

from dpalign_worker.engine.generation import generate, score


def prompts(n=3, seed=1):
    b = lm_batch(n, seed=seed, width=7)
    return b["input_ids"], b["lengths"]


def test_seeded_sampling_is_reproducible(tok_dir):
    m = make_model(tok_dir, optimizer=None, value_head=True)
    ids, lens = prompts()
    kw = dict(max_new_tokens=6, temperature=0.9, top_k=50, top_p=0.95, return_values=True)
    a = generate(m, ids, lens, seed=7, **kw)
    b = generate(m, ids, lens, seed=7, **kw)
    c = generate(m, ids, lens, seed=8, **kw)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["response_ids"], c["response_ids"])
    assert a["response_ids"].shape == (3, 6) and a["values"].shape == (3, 6)


def test_padded_prompts_match_running_alone(tok_dir):
    m = make_model(tok_dir, optimizer=None, value_head=True)
    perturb_lora(m)
    ids, lens = prompts(3, seed=4)
    batched = generate(m, ids, lens, max_new_tokens=5, temperature=0.0, return_values=True)
    for i in range(3):
        alone = generate(m, ids[i:i + 1, : lens[i]], lens[i:i + 1], max_new_tokens=5, temperature=0.0,
                         return_values=True)
        assert torch.equal(alone["response_ids"][0], batched["response_ids"][i])
        torch.testing.assert_close(alone["logprobs"][0], batched["logprobs"][i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(alone["values"][0], batched["values"][i], atol=1e-5, rtol=1e-4)


def test_generated_logprobs_and_values_match_scoring(tok_dir):
    m = make_model(tok_dir, optimizer=None, value_head=True)
    perturb_lora(m)
    ids, lens = prompts(4, seed=6)
    g = generate(m, ids, lens, max_new_tokens=6, temperature=1.3, seed=3, return_values=True)
    s = score(m, {"query_ids": ids, "query_lengths": lens, "response_ids": g["response_ids"],
                  "response_lengths": g["response_lengths"]}, logprobs=True, values=True, rewards=False,
              micro_batch_size=3)
    torch.testing.assert_close(s["logprobs"], g["logprobs"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s["values"], g["values"], atol=1e-4, rtol=1e-4)


def test_eos_stops_and_min_new_tokens(tok_dir):
    m = make_model(tok_dir, optimizer=None, lora_rank=0)
    with torch.no_grad():  # final hidden state = a constant vector that the EOS row matches strongly
        ln_f = m.model.lm.transformer.ln_f
        ln_f.weight.zero_()
        ln_f.bias.copy_(torch.linspace(-1, 1, 32))
        m.model.lm.lm_head.weight[m.eos_id] = torch.linspace(-1, 1, 32) * 100
    ids, lens = prompts(2)
    g = generate(m, ids, lens, max_new_tokens=5, temperature=0.0)
    assert g["response_lengths"].tolist() == [1, 1] and (g["response_ids"][:, 0] == m.eos_id).all()
    assert (g["response_ids"][:, 1:] == m.pad_id).all()
    g = generate(m, ids, lens, max_new_tokens=5, min_new_tokens=2, temperature=0.0)
    assert g["response_lengths"].tolist() == [3, 3]


def test_rewards_at_last_real_token(tok_dir):
    m = make_model(tok_dir, optimizer=None, reward_head=True)
    b = lm_batch(3, seed=2)
    r = score(m, {"input_ids": b["input_ids"], "lengths": b["lengths"]}, False, False, True)["rewards"]
    for i in range(3):
        k = int(b["lengths"][i])
        alone = score(m, {"input_ids": b["input_ids"][i:i + 1, :k], "lengths": b["lengths"][i:i + 1]},
                      False, False, True)["rewards"]
        torch.testing.assert_close(alone[0], r[i], atol=1e-5, rtol=1e-5)
    # query + response packing gives the same score as the concatenated sequence
    q, qn = b["input_ids"][:, :3], torch.full((3,), 3)
    resp = torch.nn.functional.pad(b["input_ids"][:, 3:], (0, 2), value=m.pad_id)
    pr = score(m, {"query_ids": q, "query_lengths": qn, "response_ids": resp, "response_lengths": b["lengths"] - 3},
               False, False, True)["rewards"]
    torch.testing.assert_close(pr, r, atol=1e-5, rtol=1e-5)


def test_fused_attention_matches_eager_and_is_switched_back(tok_dir):
    """generate/score run with SDPA (inference_attention); the private step's vmap needs eager."""
    from dpalign_worker.engine.generation import _generate, _score

    m = make_model(tok_dir, optimizer=None, value_head=True)
    perturb_lora(m)
    ids, lens = prompts(5, seed=9)  # left-padded internally: rows of different lengths
    assert m.model.lm.config._attn_implementation == "eager"
    fused = generate(m, ids, lens, max_new_tokens=6, temperature=0.0, return_values=True)
    assert m.model.lm.config._attn_implementation == "eager"
    eager = _generate(m, ids, lens, 6, 0, 0.0, 0, 0.0, 0, True)
    assert torch.equal(fused["response_ids"], eager["response_ids"])
    torch.testing.assert_close(fused["logprobs"], eager["logprobs"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused["values"], eager["values"], atol=1e-5, rtol=1e-5)
    batch = {"query_ids": ids, "query_lengths": lens, "response_ids": fused["response_ids"],
             "response_lengths": fused["response_lengths"]}
    a = score(m, batch, logprobs=True, values=True, rewards=False)
    b = _score(m, batch, logprobs=True, values=True, rewards=False)
    torch.testing.assert_close(a["logprobs"], b["logprobs"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["values"], b["values"], atol=1e-5, rtol=1e-5)
    assert m.model.lm.config._attn_implementation == "eager"


def test_sample_rows_follows_the_distribution_and_never_picks_filtered_tokens():
    from scipy.stats import chisquare

    from dpalign_worker.engine.generation import sample_rows

    p = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.0])
    gen = torch.Generator().manual_seed(3)
    draws = torch.cat([sample_rows(p.expand(1000, 5), gen) for _ in range(40)])
    counts = torch.bincount(draws, minlength=5).double()
    assert counts[1] == 0 and counts[4] == 0  # probability 0 (top-k/top-p filtered): never
    n = float(counts.sum())
    assert chisquare(counts[[0, 2, 3]].numpy(), (p[[0, 2, 3]].double() * n).numpy()).pvalue > 1e-3
    # rows are independent and each follows its own distribution; a one-hot row always gives its token
    rows = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert sample_rows(rows, gen).tolist() == [2, 0]
    # seeded: the same generator state gives the same tokens
    a = sample_rows(p.expand(50, 5), torch.Generator().manual_seed(9))
    b = sample_rows(p.expand(50, 5), torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
