"""Choosing the torch device: DirectML, then CUDA, then CPU, and saying why."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from . import cpu_features

log = logging.getLogger(__name__)


class DeviceUnavailable(RuntimeError):
    """The configured device cannot be used on this machine."""


@dataclass(frozen=True)
class DeviceChoice:
    kind: str  # "directml", "cuda" or "cpu"
    device: torch.device
    name: str
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)  # kind -> why it was not used

    def describe(self) -> str:
        skipped = "; ".join(f"{kind} skipped: {why}" for kind, why in self.skipped.items())
        return f"{self.kind} ({self.name}): {self.reason}" + (f" [{skipped}]" if skipped else "")


def load_torch_directml() -> Any:
    """Import torch_directml; a separate function so tests can put a stand-in module in its place."""
    return importlib.import_module("torch_directml")


def probe_directml() -> DeviceChoice:
    try:
        directml = load_torch_directml()
    except ImportError as error:
        raise DeviceUnavailable(f"torch-directml is not installed ({error})") from None
    except Exception as error:  # a broken DirectML install raises all sorts of things at import
        raise DeviceUnavailable(f"torch-directml failed to import: {error}") from None
    if hasattr(directml, "is_available") and not directml.is_available():
        raise DeviceUnavailable("torch-directml reports no usable DirectML device")
    count = directml.device_count()
    if count < 1:
        raise DeviceUnavailable("torch-directml found no DirectML adapter")
    index = directml.default_device() if hasattr(directml, "default_device") else 0
    name = directml.device_name(index)
    return DeviceChoice("directml", directml.device(index), str(name), f"DirectML adapter {index} of {count}")


def probe_cuda() -> DeviceChoice:
    if not torch.cuda.is_available():
        raise DeviceUnavailable("torch reports no CUDA device")
    return DeviceChoice("cuda", torch.device("cuda", 0), torch.cuda.get_device_name(0), "CUDA device 0")


def probe_cpu() -> DeviceChoice:
    return DeviceChoice("cpu", torch.device("cpu"), "CPU", f"{torch.get_num_threads()} threads")


PROBES = {"directml": probe_directml, "cuda": probe_cuda, "cpu": probe_cpu}


def choose_device(requested: str) -> DeviceChoice:
    """An explicit device must work; `auto` takes the first of DirectML, CUDA, CPU that does."""
    if requested != "auto":
        return PROBES[requested]()
    skipped: dict[str, str] = {}
    for kind in ("directml", "cuda"):
        try:
            choice = PROBES[kind]()
        except DeviceUnavailable as error:
            skipped[kind] = str(error)
            continue
        return DeviceChoice(choice.kind, choice.device, choice.name, "auto: " + choice.reason, skipped)
    choice = probe_cpu()
    return DeviceChoice("cpu", choice.device, choice.name, "auto: no GPU available, " + choice.reason, skipped)


def resolve_dtype(requested: str, kind: str) -> str:
    """The dtype `auto` stands for on a device of `kind`; other values are returned as they are.

    DirectML: float32 (float16 is unstable on some drivers, bfloat16 missing). CUDA: float16,
    the usual fast choice there. CPU: bfloat16 where the CPU computes it in hardware (1.4x
    float32 on the benchmark machine, same transcripts), else float32.
    """
    if requested != "auto":
        return requested
    if kind == "cuda":
        return "float16"
    if kind == "cpu" and bfloat16_is_native():
        return "bfloat16"
    return "float32"


def dtype_problem(kind: str, dtype: str) -> str | None:
    """Why `dtype` cannot run on a device of `kind`, or None where it can."""
    if dtype == "bfloat16" and kind == "directml":
        return "DirectML has no bfloat16: set [model] dtype = float32 (or float16)"
    return None


def bfloat16_is_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware; see cpu_features (works on torch 2.4.1 too)."""
    return cpu_features.bfloat16_is_native()


def release_memory(choice: DeviceChoice) -> None:
    """Give cached device memory back after a failure (e.g. out of memory)."""
    if choice.kind == "cuda":
        torch.cuda.empty_cache()
    import gc

    gc.collect()
