"""Choosing the torch device: DirectML, then CUDA, then CPU, and saying why.

torch-directml 0.2.5 can raise anything after import, or kill the process with SIGSEGV inside
its native layer, on a machine whose GPU or driver it cannot use. So its first use in a process
happens in a child process (`probe_directml_adapters`): a crash there becomes a reason to skip
DirectML, never the end of the server. Doctor reads its adapters from the same probe.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from . import cpu_features

log = logging.getLogger(__name__)

# Tests only: the import name of a stand-in module (tests/support/directml_doubles) used in place of torch_directml.
DIRECTML_MODULE_VARIABLE = "WHISPER_API_TORCH_DIRECTML"
PROBE_TIMEOUT_SECONDS = 90
PROBE_ANSWER_PREFIX = "whisper-api-directml-probe: "

DIRECTML_NOT_INSTALLED_ADVICE = "install torch-directml: run setup.ps1 without -Cpu (Windows only)"
DIRECTML_BROKEN_ADVICE = (
    "update the graphics driver and restart Windows, or reinstall with setup.ps1; "
    "meanwhile set [model] device = auto, which uses the CPU"
)
DIRECTML_NO_ADAPTER_ADVICE = "update the graphics driver: DirectML sees no GPU; meanwhile set [model] device = auto or cpu"


class DeviceUnavailable(RuntimeError):
    """The configured device cannot be used on this machine: `reason` says why, `advice` what to do."""

    def __init__(self, reason: str, advice: str = "") -> None:
        super().__init__(reason + (f"; {advice}" if advice else ""))
        self.reason = reason
        self.advice = advice


@dataclass(frozen=True)
class DeviceChoice:
    kind: str  # "directml", "cuda" or "cpu"
    device: torch.device
    name: str
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)  # kind -> why it was not used
    float64_support: bool | None = True  # DirectML adapters may lack it; None when the module cannot tell

    def describe(self) -> str:
        skipped = "; ".join(f"{kind} skipped: {why}" for kind, why in self.skipped.items())
        return f"{self.kind} ({self.name}): {self.reason}" + (f" [{skipped}]" if skipped else "")


@dataclass(frozen=True)
class DirectMLAdapter:
    index: int
    name: str
    float64_support: bool | None  # None: this torch-directml has no has_float64_support
    in_use_bytes: int | None  # from torch_directml.gpu_memory, a hint at best


@dataclass(frozen=True)
class DirectMLProbe:
    """What the child process learned from torch-directml."""

    default_index: int
    adapters: tuple[DirectMLAdapter, ...]

    @property
    def default_adapter(self) -> DirectMLAdapter:
        return self.adapters[self.default_index]


def directml_module_name() -> str:
    return os.environ.get(DIRECTML_MODULE_VARIABLE) or "torch_directml"


def load_torch_directml() -> Any:
    """Import torch_directml (or the stand-in named by WHISPER_API_TORCH_DIRECTML) in this process."""
    return importlib.import_module(directml_module_name())


def directml_is_installed(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):  # a dotted stand-in name whose package is missing
        return False


# Runs in the child: imports nothing of whisper_api, answers one JSON line, or crashes trying.
PROBE_SCRIPT = """
import importlib, json, sys
def answer(**fields):
    print(%(prefix)r + json.dumps(fields), flush=True)
    sys.exit(0)
stage = "import"
try:
    directml = importlib.import_module(sys.argv[1])
    stage = "is_available()"
    if not directml.is_available():
        answer(no_adapter="torch-directml reports no usable DirectML device")
    stage = "device_count()"
    count = int(directml.device_count())
    if count < 1:
        answer(no_adapter="torch-directml found no DirectML adapter")
    stage = "default_device()"
    default_index = int(directml.default_device())
    if not 0 <= default_index < count:
        answer(no_adapter=f"torch-directml's default adapter {default_index} is not one of its {count}")
    adapters = []
    for index in range(count):
        stage = f"device_name({index})"
        name = str(directml.device_name(index))
        stage = f"has_float64_support({index})"
        float64 = bool(directml.has_float64_support(index)) if hasattr(directml, "has_float64_support") else None
        try:  # fractions of mb_per_tile in use, per tile: a hint, so its failure is not the probe's
            in_use = int(sum(float(tile) for tile in directml.gpu_memory(index, 1024)) * 1024 * 1024 * 1024)
        except Exception:
            in_use = None
        adapters.append({"index": index, "name": name, "float64_support": float64, "in_use_bytes": in_use})
    stage = f"device({default_index})"
    device = directml.device(default_index)
    stage = "a first computation on the device"
    import torch
    result = float((torch.ones(4, device=device) + 1).sum().cpu())
    if result != 8.0:
        answer(error=f"a first computation on the DirectML device gave {result} instead of 8.0")
except SystemExit:
    raise
except BaseException as error:
    failure = "import" if stage == "import" else "call"
    answer(failure=failure, stage=stage, error=f"{type(error).__name__}: {error}".strip())
answer(default_index=default_index, adapters=adapters)
""" % {"prefix": PROBE_ANSWER_PREFIX}

_probes: dict[str, DirectMLProbe | DeviceUnavailable] = {}


def probe_directml_adapters() -> DirectMLProbe:
    """torch-directml's adapters as a child process found them; raises DeviceUnavailable.

    The answer is kept for the life of the process: the driver does not change under it.
    """
    module_name = directml_module_name()
    if not directml_is_installed(module_name):
        raise DeviceUnavailable("torch-directml is not installed", DIRECTML_NOT_INSTALLED_ADVICE)
    if module_name not in _probes:
        try:
            _probes[module_name] = _probe_in_child(module_name)
        except DeviceUnavailable as error:
            _probes[module_name] = error
    result = _probes[module_name]
    if isinstance(result, DeviceUnavailable):
        raise DeviceUnavailable(result.reason, result.advice)
    return result


def forget_directml_probe() -> None:
    """Probe again on the next use (tests switch stand-ins; a server never needs this)."""
    _probes.clear()


def _probe_in_child(module_name: str) -> DirectMLProbe:
    search_path = os.pathsep.join(entry or os.getcwd() for entry in sys.path)
    environment = {**os.environ, "PYTHONPATH": search_path}
    try:
        completed = subprocess.run(
            [sys.executable, "-c", PROBE_SCRIPT, module_name],
            capture_output=True, text=True, encoding="utf-8", errors="replace",
            timeout=PROBE_TIMEOUT_SECONDS, env=environment,
        )
    except subprocess.TimeoutExpired:
        raise DeviceUnavailable(
            f"the DirectML probe did not finish in {PROBE_TIMEOUT_SECONDS} s", DIRECTML_BROKEN_ADVICE
        ) from None
    answer = next(
        (line[len(PROBE_ANSWER_PREFIX):] for line in completed.stdout.splitlines() if line.startswith(PROBE_ANSWER_PREFIX)),
        None,
    )
    if answer is None:
        log.debug("DirectML probe output: %s %s", completed.stdout[-2000:], completed.stderr[-2000:])
        raise DeviceUnavailable(f"the DirectML probe crashed ({_describe_exit(completed.returncode)})", DIRECTML_BROKEN_ADVICE)
    fields = json.loads(answer)
    if "no_adapter" in fields:
        raise DeviceUnavailable(fields["no_adapter"], DIRECTML_NO_ADAPTER_ADVICE)
    if fields.get("failure") == "import":
        raise DeviceUnavailable(f"torch-directml is installed but failed to import: {fields['error']}", DIRECTML_BROKEN_ADVICE)
    if "error" in fields:
        where = f" in {fields['stage']}" if "stage" in fields else ""
        raise DeviceUnavailable(f"torch-directml failed{where}: {fields['error']}", DIRECTML_BROKEN_ADVICE)
    adapters = tuple(DirectMLAdapter(**adapter) for adapter in fields["adapters"])
    return DirectMLProbe(default_index=fields["default_index"], adapters=adapters)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"signal {-returncode}"
    if returncode > 0xFFFF:  # a Windows exception code, e.g. 0xC0000005 for an access violation
        return f"exit code 0x{returncode & 0xFFFFFFFF:08X}"
    return f"exit code {returncode}"


def probe_directml() -> DeviceChoice:
    probe = probe_directml_adapters()
    adapter = probe.default_adapter
    try:  # the child proved the module works; this process imports it only now
        device = load_torch_directml().device(adapter.index)
    except Exception as error:
        reason = f"torch-directml failed in device({adapter.index}): {type(error).__name__}: {error}".strip()
        raise DeviceUnavailable(reason, DIRECTML_BROKEN_ADVICE) from None
    float64 = {True: "float64 supported", False: "no float64", None: "float64 support unknown"}[adapter.float64_support]
    reason = f"DirectML adapter {adapter.index} of {len(probe.adapters)} ({float64})"
    return DeviceChoice("directml", device, adapter.name, reason, float64_support=adapter.float64_support)


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
            skipped[kind] = error.reason
            continue
        return dataclasses.replace(choice, reason="auto: " + choice.reason, skipped=skipped)
    choice = probe_cpu()
    return dataclasses.replace(choice, reason="auto: no GPU available, " + choice.reason, skipped=skipped)


def resolve_dtype(requested: str, kind: str) -> str:
    """The dtype `auto` stands for on a device of `kind`; other values are returned as they are.

    DirectML: float32 (float16 is unstable on some drivers, bfloat16 missing). CUDA: float16,
    the usual fast choice there. CPU: bfloat16 where the CPU computes it in hardware (1.4x
    float32 on the benchmark machine, same transcripts), else int8 weights (a quarter of the
    bytes a decoding step reads; same sentences found, character error rate within 0.01 of
    float32: docs/benchmarks.md), else float32 (a torch without a quantized CPU engine).
    """
    if requested != "auto":
        return requested
    if kind == "cuda":
        return "float16"
    if kind == "cpu" and bfloat16_is_native():
        return "bfloat16"
    if kind == "cpu" and int8_is_supported():
        return "int8"
    return "float32"


INT8_CPU_ONLY = (
    "dtype = int8 runs on the CPU's quantized kernels, which {device} does not have (doctor's "
    "int8 check shows what the device does with them): set [model] dtype = {instead}, or device = cpu"
)


def dtype_problem(kind: str, dtype: str) -> str | None:
    """Why `dtype` cannot run on a device of `kind`, or None where it can."""
    if dtype == "bfloat16" and kind == "directml":
        return "DirectML has no bfloat16: set [model] dtype = float32 (or float16)"
    if dtype == "int8" and kind == "directml":
        return INT8_CPU_ONLY.format(device="DirectML", instead="float32 (or float16)")
    if dtype == "int8" and kind == "cuda":
        return INT8_CPU_ONLY.format(device="CUDA", instead="float16")
    if dtype == "int8" and not int8_is_supported():
        return f"this torch ({torch.__version__}) has no quantized CPU engine for dtype = int8: set [model] dtype = float32"
    return None


def int8_is_supported() -> bool:
    """Whether this torch can run int8 weights on the CPU (whisper_api/inference/quantization.py)."""
    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm", "onednn", "qnnpack"))


def bfloat16_is_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware; see cpu_features (works on torch 2.4.1 too)."""
    return cpu_features.bfloat16_is_native()


def release_memory(choice: DeviceChoice) -> None:
    """Give cached device memory back after a failure (e.g. out of memory)."""
    if choice.kind == "cuda":
        torch.cuda.empty_cache()
    import gc

    gc.collect()
