"""The Opacus backend gives the same per-example gradients as the builtin one (only where installed)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("opacus")

from conftest import lm_batch, make_model, perturb_lora  # noqa: E402

from dpalign_worker.engine import opacus_backend  # noqa: E402
from dpalign_worker.engine.objectives import get_objective  # noqa: E402
from dpalign_worker.engine.per_example import per_example_grads  # noqa: E402


def test_opacus_matches_builtin(tok_dir):
    m = make_model(tok_dir)
    perturb_lora(m)
    obj = get_objective("causal_lm")
    batch = obj.prepare(lm_batch(4), m.pad_id)
    ref, _, _ = per_example_grads(m.model, obj, batch, m.trainable, None)
    got, _, _ = opacus_backend.per_example_grads(m.model, obj, batch, m.trainable, None)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-5, rtol=1e-5)
