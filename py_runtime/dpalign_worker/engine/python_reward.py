"""A user's reward function, `package.module:function`, called inside the worker as
`function(prompts: list[str], completions: list[str]) -> list[float]` (one score per completion).

The function sees texts decoded with the policy's tokenizer (see hf_reward.score_rows). Whatever goes
wrong (the module does not import, the name is missing, the function raises, returns the wrong
number of scores or a non-finite one) becomes one message that names the function.
"""
from __future__ import annotations

import importlib
import math
import sys
from dataclasses import dataclass, field

import torch

from ..errors import invalid_argument, not_found
from .hf_reward import TextReward, load_policy_tokenizer


@dataclass(frozen=True)
class PythonRewardConfig:
    """PythonRewardSpec in worker.proto."""
    function: str
    python_path: tuple[str, ...] = field(default_factory=tuple)
    tokenizer_dir: str = ""


def load_function(name: str, python_path: tuple[str, ...] = ()):
    mod_name, sep, fn_name = name.partition(":")
    if not sep or not mod_name or not fn_name:
        raise invalid_argument(f"reward function {name!r} is not of the form package.module:function (reward.function)")
    for p in reversed(python_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    importlib.invalidate_caches()  # a module written after the worker started must be found
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or anything the module raises while importing
        where = f" (searched reward.pythonPath {list(python_path)} and the worker's sys.path)" if isinstance(e, ImportError) else ""
        raise not_found(f"reward function {name!r}: cannot import module {mod_name!r}: {type(e).__name__}: {e}{where}",
                        function=name) from None
    fn = getattr(mod, fn_name, None)
    if fn is None:
        raise not_found(f"reward function {name!r}: module {mod_name!r} has no attribute {fn_name!r}", function=name)
    if not callable(fn):
        raise invalid_argument(f"reward function {name!r} is not callable ({type(fn).__name__})", function=name)
    return fn


class PythonReward(TextReward):
    def __init__(self, name: str, fn) -> None:
        super().__init__()
        self.name, self.fn = name, fn
        self.reward_head = torch.nn.Identity()  # marks a reward model for the engine; holds no weights

    def score_texts(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        try:
            out = self.fn(list(prompts), list(completions))
        except Exception as e:
            raise invalid_argument(f"reward function {self.name!r} raised {type(e).__name__}: {e}", function=self.name) from None
        try:
            scores = [float(x) for x in out]
        except (TypeError, ValueError) as e:
            raise invalid_argument(f"reward function {self.name!r} must return a list of numbers, one per completion; "
                                   f"got {type(out).__name__} ({e})", function=self.name) from None
        if len(scores) != len(completions):
            raise invalid_argument(f"reward function {self.name!r} returned {len(scores)} scores for "
                                   f"{len(completions)} completions (one per completion expected)", function=self.name)
        bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
        if bad:
            raise invalid_argument(f"reward function {self.name!r} returned a non-finite score ({scores[bad[0]]}) "
                                   f"for completion {bad[0]} ({len(bad)} of {len(scores)} non-finite)", function=self.name)
        return torch.tensor(scores, dtype=torch.float64)


def build(handle: str, cfg: PythonRewardConfig, device: torch.device):
    from .lora import LoraConfig
    from .models import LoadedModel

    fn = load_function(cfg.function, tuple(cfg.python_path))
    return LoadedModel(
        handle=handle, model=PythonReward(cfg.function, fn), tokenizer=load_policy_tokenizer(cfg.tokenizer_dir),
        device=device, lora=LoraConfig(), trainable={},
        source={"python_reward": {"function": cfg.function, "python_path": list(cfg.python_path)}},
    )
