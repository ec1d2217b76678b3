"""A stand-in for the `torch_directml` module, for machines without DirectML.

It answers the same calls as torch-directml 0.2.5 (`is_available`, `device_count`,
`default_device`, `device_name`, `device`, `gpu_memory`), but its device is the CPU, so the
code path that chooses DirectML, moves the model and inputs, and runs inference is exercised
for real up to the point where a real DirectML device would take over.
"""

from __future__ import annotations

import types

import torch


def make_standin(adapters: tuple[str, ...] = ("AMD Radeon 780M Graphics",), available: bool = True) -> types.ModuleType:
    module = types.ModuleType("torch_directml")
    module.is_available = lambda: available and bool(adapters)
    module.device_count = lambda: len(adapters)
    module.default_device = lambda: 0
    module.device_name = lambda index=0: adapters[index]
    module.device = lambda index=0: torch.device("cpu")
    module.gpu_memory = lambda index=0, mb_per_tile=1: [512.0] * 4
    return module
