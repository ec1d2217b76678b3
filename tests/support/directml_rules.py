"""The DirectML rules: what torch-directml 0.2.5 cannot do, checked on any device while code runs.

`DirectMLRules` is a TorchDispatchMode (with a TorchFunctionMode beside it): every aten operator
dispatched in its `with` block is checked, so tensor code run on the CPU (the DirectML stand-in's
device) is held to the rules a real Radeon 780M imposes:

- float64: many DirectML GPUs, integrated ones in particular, compute no float64 ("The GPU device
  does not support Double (Float64) operations!", DirectML issues 309, 430, 438, 699);
- operators that DirectML runs on the CPU instead, or gets wrong (`FORBIDDEN_OPERATORS`);
- inference_mode: moving a tensor to the DirectML device inside it raises "Cannot set
  version_counter for inference tensor" (DirectML issue 602). On the stand-in the device is the
  CPU, so any operator under inference_mode counts (use torch.no_grad()).

The forbidden operators are also watched where Python calls them (the TorchFunctionMode): newer
torch decomposes some before dispatch (`repeat_interleave` with an int count becomes
unsqueeze/expand/clone on torch 2.13), while torch 2.4.1, the DirectML stack, dispatches
`aten::repeat_interleave.Tensor` and falls back.
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

FLOAT64 = "float64"
FORBIDDEN_OPERATOR = "operator"
INFERENCE_MODE = "inference_mode"
RULES = (FLOAT64, FORBIDDEN_OPERATOR, INFERENCE_MODE)

# aten operator (overload packet name) -> what DirectML does with it
FORBIDDEN_OPERATORS = {
    "repeat_interleave": "falls back to the CPU (beam search expansion in generate)",
    "multinomial": "falls back to the CPU (sampling in every temperature fallback)",
    "cumprod": "falls back to the CPU",
    "count_nonzero": "falls back to the CPU",
    "_embedding_bag": "falls back to the CPU",
    "upsample_nearest1d": "falls back to the CPU",
    "eye": "falls back and returns an empty tensor instead of raising (DirectML issue 431)",
}

_TORCH_DIRECTORY = str(Path(torch.__file__).resolve().parent)
_THIS_FILE = str(Path(__file__).resolve())
LOCATIONS_PER_VIOLATION = 3  # where each distinct violation happened, first few only (stacks are slow)


@dataclass
class Violation:
    rule: str
    operator: str
    detail: str
    count: int = 0
    locations: list[str] = field(default_factory=list)  # "file:line in function", outside torch

    def describe(self) -> str:
        where = "; ".join(self.locations)
        return f"[{self.rule}] {self.operator}: {self.detail} ({self.count}x) at {where}"


def forbidden_operator(name: str) -> str | None:
    """The FORBIDDEN_OPERATORS key for a Python function or aten operator name, if it is one."""
    bare = name.lstrip("_")
    return next((key for key in FORBIDDEN_OPERATORS if key.lstrip("_") == bare), None)


class _FunctionWatcher(TorchFunctionMode):
    def __init__(self, rules: "DirectMLRules") -> None:
        super().__init__()
        self.rules = rules

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        operator = forbidden_operator(getattr(func, "__name__", ""))
        if operator is None:
            return func(*args, **(kwargs or {}))
        self.rules._record(FORBIDDEN_OPERATOR, operator, FORBIDDEN_OPERATORS[operator])
        self.rules._called.append(operator)
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.rules._called.pop()


class _DispatchWatcher(TorchDispatchMode):
    def __init__(self, rules: "DirectMLRules") -> None:
        super().__init__()
        self.rules = rules

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        rules = self.rules
        name = func.overloadpacket.__name__
        rules.operators[name] += 1
        if torch.is_inference_mode_enabled():
            rules._record(INFERENCE_MODE, name, "ran under torch.inference_mode() (DirectML needs torch.no_grad())")
        operator = forbidden_operator(name)
        if operator is not None and operator not in rules._called:  # not already counted where Python called it
            rules._record(FORBIDDEN_OPERATOR, operator, FORBIDDEN_OPERATORS[operator])
        result = func(*args, **(kwargs or {}))
        outputs, _ = tree_flatten(result)
        if any(isinstance(output, torch.Tensor) and output.dtype == torch.float64 for output in outputs):
            rules._record(FLOAT64, name, "produced a float64 tensor")
        return result


class DirectMLRules:
    """`with DirectMLRules() as rules:` records a `Violation` for each distinct rule broken inside."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], Violation] = {}
        self.operators: Counter[str] = Counter()  # every aten operator dispatched, for the curious
        self._called: list[str] = []  # forbidden operators being called from Python right now
        self._modes = (_FunctionWatcher(self), _DispatchWatcher(self))

    def __enter__(self) -> "DirectMLRules":
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exception: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exception)

    def _record(self, rule: str, operator: str, detail: str) -> None:
        violation = self.found.setdefault((rule, operator), Violation(rule, operator, detail))
        violation.count += 1
        if len(violation.locations) < LOCATIONS_PER_VIOLATION:
            location = _caller_outside_torch()
            if location not in violation.locations:
                violation.locations.append(location)

    def violations(self, rule: str | None = None) -> list[Violation]:
        return [violation for violation in self.found.values() if rule is None or violation.rule == rule]

    def report(self, rule: str | None = None) -> str:
        return "\n".join(violation.describe() for violation in self.violations(rule)) or "no violations"


def _caller_outside_torch() -> str:
    """The innermost frame that is neither torch's nor this checker's: the code that broke the rule."""
    for frame in reversed(traceback.extract_stack()):
        filename = str(Path(frame.filename).resolve()) if frame.filename and not frame.filename.startswith("<") else ""
        if filename and not filename.startswith(_TORCH_DIRECTORY) and filename != _THIS_FILE:
            return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
    return "unknown"
