"""reward.kind python (engine/python_reward.py): a function the test writes into a module directory
that is put on the worker's sys.path (reward.pythonPath) receives the prompts and completions as the
policy's tokenizer decodes them; every failure names the function."""
from __future__ import annotations

import textwrap

import pytest

from dpalign_worker.errors import WorkerError
from dpalign_worker.handlers import engine as h
from dpalign_worker.protocol import worker_pb2 as pb
from dpalign_worker.tensors import batch_from_proto, batch_to_proto

MODULE = """
import math
CALLS = []

def score(prompts, completions):
    CALLS.append((list(prompts), list(completions)))
    return [c.count("great") - c.count("awful") + 0.5 * len(p.split()) for p, c in zip(prompts, completions)]

def short(prompts, completions):
    return [1.0]

def nan(prompts, completions):
    return [math.nan for _ in completions]

def boom(prompts, completions):
    raise RuntimeError("kaput")

def words(prompts, completions):
    return ["a" for _ in completions]

not_callable = 3
"""


@pytest.fixture()
def module_dir(tmp_path):
    name = f"user_rewards_{tmp_path.name.replace('-', '_')}"  # a fresh module name per test
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "broken_rewards_mod.py").write_text("raise ImportError('needs a package that is not installed')\n")
    return str(tmp_path), name


def spec(fn: str, path: str, tok_dir: str) -> pb.ModelSpec:
    return pb.ModelSpec(python_reward=pb.PythonRewardSpec(function=fn, python_path=[path], tokenizer_dir=tok_dir))


def pairs(ctx, handle, prompts, completions):
    q = batch_from_proto(h.tokenize(pb.TokenizeRequest(handle=handle, texts=prompts), ctx))
    r = batch_from_proto(h.tokenize(pb.TokenizeRequest(handle=handle, texts=completions), ctx))
    return batch_to_proto({"query_ids": q["input_ids"], "query_lengths": q["lengths"],
                           "response_ids": r["input_ids"], "response_lengths": r["lengths"]})


def test_calls_the_function_with_decoded_prompts_and_completions(ctx, tok_dir, module_dir):
    import importlib

    path, name = module_dir
    info = h.load_model(pb.LoadModelRequest(handle="py", spec=spec(f"{name}:score", path, tok_dir)), ctx)
    assert info.trainable_parameters == 0
    prompts, completions = ["the movie", "a terrible film with"], [" was great, great", " awful acting"]
    got = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(
        handle="py", batch=pairs(ctx, "py", prompts, completions), rewards=True), ctx))["rewards"]
    assert got.tolist() == [2 + 0.5 * 2, -1 + 0.5 * 4]
    calls = importlib.import_module(name).CALLS
    assert calls[-1] == (prompts, completions)
    # rows without a split: empty prompts, the whole text as the completion
    rows = h.tokenize(pb.TokenizeRequest(handle="py", texts=["great movie"]), ctx)
    whole = batch_from_proto(h.score_sequences(pb.ScoreSequencesRequest(handle="py", batch=rows, rewards=True), ctx))
    assert whole["rewards"].tolist() == [1.0] and calls[-1] == ([""], ["great movie"])


@pytest.mark.parametrize("fn, message", [
    ("short", r"returned 1 scores for 2 completions"),
    ("nan", r"returned a non-finite score \(nan\) for completion 0 \(2 of 2 non-finite\)"),
    ("boom", r"raised RuntimeError: kaput"),
    ("words", r"must return a list of numbers"),
])
def test_bad_results_name_the_function(ctx, tok_dir, module_dir, fn, message):
    path, name = module_dir
    h.load_model(pb.LoadModelRequest(handle="py", spec=spec(f"{name}:{fn}", path, tok_dir)), ctx)
    with pytest.raises(WorkerError, match=message) as e:
        h.score_sequences(pb.ScoreSequencesRequest(handle="py", batch=pairs(ctx, "py", ["a", "b"], [" great", " awful"]),
                                                   rewards=True), ctx)
    assert f"reward function '{name}:{fn}'" in e.value.message


def test_load_failures_name_the_function(ctx, tok_dir, module_dir):
    path, name = module_dir
    cases = [
        ("no_such_module_xyz:score", r"cannot import module 'no_such_module_xyz': ModuleNotFoundError.*reward.pythonPath"),
        ("broken_rewards_mod:score", r"cannot import module 'broken_rewards_mod': ImportError: needs a package"),
        (f"{name}:missing", r"has no attribute 'missing'"),
        (f"{name}:not_callable", r"is not callable"),
        ("nocolon", r"not of the form package.module:function"),
    ]
    for fn, message in cases:
        with pytest.raises(WorkerError, match=message) as e:
            h.load_model(pb.LoadModelRequest(handle="x", spec=spec(fn, path, tok_dir)), ctx)
        assert f"reward function '{fn}'" in e.value.message
    assert "x" not in ctx.models
    with pytest.raises(WorkerError, match="not trainable"):
        h.load_model(pb.LoadModelRequest(handle="x", spec=spec(f"{name}:score", path, tok_dir),
                                         optimizer=pb.OptimizerSpec(name=pb.adamw, lr=1e-3)), ctx)
    # the worker stays usable after these errors
    h.load_model(pb.LoadModelRequest(handle="ok", spec=spec(f"{name}:score", path, tok_dir)), ctx)
    assert "ok" in ctx.models
