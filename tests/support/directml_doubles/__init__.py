"""Stand-ins for the `torch_directml` module (torch-directml 0.2.5.dev240914), for machines without DirectML.

Each variant is a module of this package; `use_directml_double(monkeypatch, "working")` makes the
server, doctor and the child-process probe import it instead of torch_directml (through
WHISPER_API_TORCH_DIRECTML, which the probe's child process inherits).

The Python layer below copies the real package's `device.py` line for line (read from the wheel);
only its native layer, `torch_directml_native`, is replaced by `NativeDouble`, and that is where the
variants fail, as the real one does on machines without a usable GPU:

- import_fails: `import torch_directml` raises OSError (the DirectML library does not load);
- raises_in_is_available / raises_in_device_count / raises_in_device: the import works, then that
  call raises RuntimeError with a meaningless error code;
- no_device: the native layer counts 0 adapters (is_available() False, device_count() 0);
- crashes_in_device_name: device_name(0) kills the process with SIGSEGV, as it did every time
  it was tried on such a machine.

Differences from the real module, on purpose: `device(i)` is the CPU (`torch.device("cpu")`, not
`privateuseone:i`), so the model really runs; `torch.ops.load_library` and the PrivateUse1
backend registration are not done.
"""

from __future__ import annotations

import math
import os
import signal
from typing import Any

import torch

from whisper_api import devices

RADEON = "AMD Radeon 780M Graphics"
BASIC_RENDER_DRIVER = "Microsoft Basic Render Driver"
GARBAGE_ERROR = "Unknown error -2147467259"  # what the native layer says on a broken driver (0x80004005)
PACKAGE = __name__


class NativeDouble:
    """`torch_directml_native`: the C++ layer, where the real failures happen."""

    def __init__(
        self,
        adapters: tuple[str, ...] = (RADEON,),
        float64_support: bool = False,
        budget_mb: int = 8192,
        in_use_mb: float = 2048.0,
        raises_in: str | None = None,
        raises_from_call: int = 1,
        crashes_in: str | None = None,
    ) -> None:
        self.adapters = adapters
        self.float64_support = float64_support
        self.budget_mb = budget_mb
        self.in_use_mb = in_use_mb
        self.raises_in = raises_in
        self.raises_from_call = raises_from_call
        self.crashes_in = crashes_in
        self.calls: dict[str, int] = {}

    def _enter(self, call: str) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1
        if call == self.crashes_in:
            os.kill(os.getpid(), signal.SIGSEGV)
        if call == self.raises_in and self.calls[call] >= self.raises_from_call:
            raise RuntimeError(GARBAGE_ERROR)

    def get_device_count(self) -> int:
        self._enter("get_device_count")
        return len(self.adapters)

    def get_default_device(self) -> int:
        self._enter("get_default_device")
        return 0

    def get_device_name(self, device_id: int) -> str:
        self._enter("get_device_name")
        return self.adapters[device_id]

    def custom_device(self, device_id: int) -> torch.device:
        self._enter("custom_device")
        return torch.device("cpu")

    def has_float64_support(self, device_id: int) -> bool:
        self._enter("has_float64_support")
        return self.float64_support

    def get_gpu_memory(self, device_id: int, mb_per_tile: int) -> list[float]:
        """One entry per tile of `mb_per_tile` MB of the budget, each the fraction of it in use,
        filled from the front (as users measured it: ComfyUI issue 1518, DirectML issue 412)."""
        self._enter("get_gpu_memory")
        tiles = math.ceil(self.budget_mb / mb_per_tile)
        used = self.in_use_mb / mb_per_tile
        return [max(0.0, min(1.0, used - tile)) for tile in range(tiles)]


def export(namespace: dict[str, Any], native: NativeDouble) -> None:
    """Define the real module's public functions in a variant module's `namespace`, over `native`.

    The bodies are torch_directml/device.py's, including its defaults evaluated at import
    (`default_device()`), so a native layer that fails there fails the import, as the real one does.
    """

    def is_available() -> bool:
        if not hasattr(native, "get_device_count"):
            return False
        return native.get_device_count() > 0

    def device_count() -> int:
        if is_available():
            return native.get_device_count()
        return 0

    def device_name(device_id: int) -> str:
        if device_id >= 0 and device_id < device_count():
            return native.get_device_name(device_id)
        return ""

    def default_device() -> int:
        return native.get_default_device()

    def device(device_id: int | None = None) -> torch.device:
        num_devices = device_count()
        if device_id is None:
            return native.custom_device(default_device())
        if device_id >= 0 and device_id < num_devices:
            return native.custom_device(device_id)
        raise Exception(
            f"Invalid device_id argument supplied {device_id}. device_id must be in range [0, {num_devices})."
        )

    def has_float64_support(device_id: int = default_device()) -> bool:
        return native.has_float64_support(device_id)

    def gpu_memory(device_id: int = default_device(), mb_per_tile: int = 1) -> list[float]:
        return native.get_gpu_memory(device_id, mb_per_tile)

    namespace.update(
        is_available=is_available, device_count=device_count, device_name=device_name,
        default_device=default_device, device=device, has_float64_support=has_float64_support,
        gpu_memory=gpu_memory,
    )


# The failing variants, by the name `auto` and doctor tests use; each is a module of this package.
FAILING_VARIANTS = (
    "import_fails", "raises_in_is_available", "raises_in_device_count", "raises_in_device",
    "no_device", "crashes_in_device_name",
)


def use_directml_double(monkeypatch, variant: str) -> None:
    """Make every DirectML probe and import, in this process and its children, use `variant`."""
    monkeypatch.setenv(devices.DIRECTML_MODULE_VARIABLE, f"{PACKAGE}.{variant}")
    monkeypatch.setattr(devices, "_probes", {})  # probe afresh, and leave no answer behind


def without_directml(monkeypatch) -> None:
    """As on a machine where torch-directml is not installed."""
    use_directml_double(monkeypatch, "not_installed")  # a module that does not exist


def directml_double(variant: str = "working") -> Any:
    """The stand-in module itself, imported in this process (never a crashing variant)."""
    import importlib

    return importlib.import_module(f"{PACKAGE}.{variant}")
