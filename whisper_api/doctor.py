"""`python -m whisper_api doctor`: checks this machine end to end and says, in plain words, what to fix.

It reports versions, the DirectML adapters and their memory, the device the configuration picks
and why, a small computation on that device checked against the CPU, the model load time, a
transcription of a Japanese clip shipped in `assets/` with its real-time factor, and every
operator that DirectML ran on the CPU instead. The exit code is 1 when something would stop the
server or make it produce wrong text (a broken device, a model that does not load), else 0.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import platform
import re
import sys
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from . import devices
from .config import Settings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
CLIP_PATH = ASSETS_DIR / "doctor_ja.ogg"
CLIP_TEXT_PATH = ASSETS_DIR / "doctor_ja.txt"
CLIP_LANGUAGE = "ja"

# Character error rates on the shipped clip: at or below GOOD the model heard it well; above
# BROKEN the output has almost nothing in common with the speech, which a working device and any
# multilingual Whisper model never produce on this clean sentence.
GOOD_CHARACTER_ERROR_RATE = 0.2
BROKEN_CHARACTER_ERROR_RATE = 0.8

# torch-directml says "The operator 'aten::x' is not currently supported on the DML backend and
# will fall back to run on the CPU. This may have performance implications."
FALLBACK_PATTERN = re.compile(r"fall(?:s|ing)?\s*back\s+to\s+(?:run\s+on\s+)?the\s+CPU|not currently supported on the DML", re.I)
OPERATOR_PATTERN = re.compile(r"'([^']+)'|(aten::[\w.]+)")

DXGI_ADAPTER_FLAG_SOFTWARE = 2


@dataclass
class Report:
    """Writes the sections and remembers the problems (exit 1) and warnings (advice only)."""

    out: TextIO
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def write(self, text: str = "") -> None:
        try:
            self.out.write(text + "\n")
        except UnicodeEncodeError:  # a console code page without Japanese: keep going, escaped
            self.out.write(text.encode("ascii", "backslashreplace").decode("ascii") + "\n")
        self.out.flush()

    def section(self, title: str) -> None:
        self.write()
        self.write(title)
        self.write("-" * len(title))

    def item(self, label: str, value: str) -> None:
        self.write(f"  {label:<15} {value}")

    def ok(self, message: str) -> None:
        self.write(f"  OK       {message}")

    def warn(self, message: str, advice: str = "") -> None:
        self.write(f"  WARNING  {message}")
        if advice:
            self.write(f"           -> {advice}")
        self.warnings.append(message)

    def problem(self, message: str, advice: str = "") -> None:
        self.write(f"  PROBLEM  {message}")
        if advice:
            self.write(f"           -> {advice}")
        self.problems.append(message)


# ----------------------------------------------------------------------------------- versions


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def operating_system() -> str:
    """Like platform.platform(), but names Windows 11 (build 22000 or later) as such."""
    if sys.platform == "win32":
        build = platform.version()
        try:
            number = int(build.split(".")[2])
        except (IndexError, ValueError):
            number = 0
        name = "Windows 11" if number >= 22000 else f"Windows {platform.release()}"
        return f"{name} (build {build}, {platform.machine()})"
    return f"{platform.platform()} ({platform.machine()})"


def report_versions(report: Report) -> None:
    import transformers

    report.section("System")
    report.item("OS", operating_system())
    report.item("Python", f"{platform.python_version()} ({sys.executable})")
    report.item("torch", torch.__version__)
    report.item("torch-directml", package_version("torch-directml"))
    report.item("transformers", transformers.__version__)
    if sys.platform == "win32" and sys.version_info[:2] not in ((3, 11), (3, 12)):
        report.warn(
            f"Python {platform.python_version()}: torch-directml has wheels for Python 3.11 and 3.12 only",
            "install Python 3.12 (winget install -e --id Python.Python.3.12), delete .venv and run setup.ps1 again",
        )


# ----------------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class WindowsAdapter:
    """One adapter as DXGI describes it: the only place Windows tells its memory sizes."""

    name: str
    dedicated_bytes: int
    shared_bytes: int
    software: bool


@dataclass(frozen=True)
class Adapter:
    index: int
    name: str
    dedicated_bytes: int | None = None
    shared_bytes: int | None = None
    in_use_bytes: int | None = None

    def describe_memory(self) -> str:
        parts = []
        if self.dedicated_bytes is not None:
            parts.append(f"{format_bytes(self.dedicated_bytes)} dedicated")
        if self.shared_bytes is not None:
            parts.append(f"{format_bytes(self.shared_bytes)} shared")
        if self.in_use_bytes is not None:
            parts.append(f"{format_bytes(self.in_use_bytes)} in use")
        if self.dedicated_bytes is None and self.shared_bytes is None:
            parts.append("total not reported" + ("" if sys.platform == "win32" else " (only Windows reports it)"))
        return ", ".join(parts)


def format_bytes(count: float) -> str:
    if count >= 1024**3:
        return f"{count / 1024**3:.1f} GB"
    return f"{count / 1024**2:.0f} MB"


def list_windows_adapters() -> list[WindowsAdapter]:
    """Every adapter DXGI enumerates, with its memory; empty off Windows or when DXGI fails."""
    if sys.platform != "win32":
        return []
    try:
        return _enumerate_dxgi_adapters()
    except Exception as error:  # diagnostics only: a missing DXGI must not end the report
        logging.getLogger(__name__).debug("DXGI enumeration failed: %s", error)
        return []


def _enumerate_dxgi_adapters() -> list[WindowsAdapter]:
    import ctypes
    import uuid

    class Guid(ctypes.Structure):
        _fields_ = [("data1", ctypes.c_uint32), ("data2", ctypes.c_uint16), ("data3", ctypes.c_uint16),
                    ("data4", ctypes.c_ubyte * 8)]

    class Luid(ctypes.Structure):
        _fields_ = [("low_part", ctypes.c_uint32), ("high_part", ctypes.c_int32)]

    class AdapterDescription(ctypes.Structure):  # DXGI_ADAPTER_DESC1
        _fields_ = [
            ("description", ctypes.c_wchar * 128),
            ("vendor_id", ctypes.c_uint32),
            ("device_id", ctypes.c_uint32),
            ("subsystem_id", ctypes.c_uint32),
            ("revision", ctypes.c_uint32),
            ("dedicated_video_memory", ctypes.c_size_t),
            ("dedicated_system_memory", ctypes.c_size_t),
            ("shared_system_memory", ctypes.c_size_t),
            ("adapter_luid", Luid),
            ("flags", ctypes.c_uint32),
        ]

    def method(interface: ctypes.c_void_p, slot: int, *argument_types: Any) -> Callable[..., int]:
        """The COM method in vtable slot `slot`, callable with the interface pointer first."""
        table = ctypes.cast(interface, ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p))).contents
        prototype = ctypes.WINFUNCTYPE(ctypes.c_long, ctypes.c_void_p, *argument_types)
        return prototype(table[slot])

    # IDXGIFactory1 slots: IUnknown 0-2, IDXGIObject 3-6, IDXGIFactory 7-11, EnumAdapters1 12.
    # IDXGIAdapter1 slots: IUnknown 0-2, IDXGIObject 3-6, IDXGIAdapter 7-9, GetDesc1 10.
    factory_interface = Guid.from_buffer_copy(uuid.UUID("770aae78-f26f-4dba-a829-253c83d1b387").bytes_le)
    factory = ctypes.c_void_p()
    result = ctypes.windll.dxgi.CreateDXGIFactory1(ctypes.byref(factory_interface), ctypes.byref(factory))
    if result != 0 or not factory:
        raise OSError(f"CreateDXGIFactory1 failed (0x{result & 0xFFFFFFFF:08X})")
    adapters: list[WindowsAdapter] = []
    try:
        enumerate_adapters = method(factory, 12, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p))
        for index in range(64):
            adapter = ctypes.c_void_p()
            if enumerate_adapters(factory, index, ctypes.byref(adapter)) != 0:  # DXGI_ERROR_NOT_FOUND ends it
                break
            try:
                description = AdapterDescription()
                if method(adapter, 10, ctypes.POINTER(AdapterDescription))(adapter, ctypes.byref(description)) == 0:
                    adapters.append(WindowsAdapter(
                        name=description.description.strip(),
                        dedicated_bytes=int(description.dedicated_video_memory),
                        shared_bytes=int(description.shared_system_memory),
                        software=bool(description.flags & DXGI_ADAPTER_FLAG_SOFTWARE),
                    ))
            finally:
                method(adapter, 2)(adapter)  # Release
    finally:
        method(factory, 2)(factory)
    return adapters


def gpu_memory_in_use(directml: Any, index: int) -> int | None:
    """torch_directml.gpu_memory lists megabytes used per tile; often all zeros, so only a hint."""
    reader = getattr(directml, "gpu_memory", None)
    if reader is None:
        return None
    try:
        return int(sum(float(tile) for tile in reader(index)) * 1024 * 1024)
    except Exception:
        return None


def _adapter_key(name: str) -> str:
    """Adapter names compared without case, spaces and trademark signs."""
    return re.sub(r"\((?:tm|r)\)|[\s\u2122\u00ae]", "", name.casefold())


def list_directml_adapters(directml: Any, windows_adapters: Sequence[WindowsAdapter]) -> list[Adapter]:
    """torch_directml's adapters, each matched by name to DXGI's entry for its memory sizes."""
    unmatched = [adapter for adapter in windows_adapters if not adapter.software] + [
        adapter for adapter in windows_adapters if adapter.software
    ]
    adapters = []
    for index in range(int(directml.device_count())):
        name = str(directml.device_name(index))
        match = next((adapter for adapter in unmatched if _adapter_key(adapter.name) == _adapter_key(name)), None)
        if match is not None:
            unmatched.remove(match)
        adapters.append(Adapter(
            index=index,
            name=name,
            dedicated_bytes=match.dedicated_bytes if match else None,
            shared_bytes=match.shared_bytes if match else None,
            in_use_bytes=gpu_memory_in_use(directml, index),
        ))
    return adapters


def report_adapters(report: Report) -> None:
    report.section("DirectML adapters")
    windows_adapters = list_windows_adapters()
    try:
        directml = devices.load_torch_directml()
    except ImportError:
        report.item("torch-directml", "not installed: the GPU cannot be used (set-up ran with -Cpu, or not on Windows)")
        directml = None
    except Exception as error:
        report.item("torch-directml", f"failed to import: {type(error).__name__}: {error}")
        directml = None
    adapters: list[Adapter] = []
    if directml is not None:
        try:
            adapters = list_directml_adapters(directml, windows_adapters)
        except Exception as error:
            report.item("torch-directml", f"could not list adapters: {type(error).__name__}: {error}")
            adapters = []
        if not adapters:
            report.item("adapters", "none: DirectML sees no GPU (update the graphics driver)")
        for adapter in adapters:
            report.item(f"adapter {adapter.index}", f"{adapter.name}: {adapter.describe_memory()}")
        if any(adapter.shared_bytes and (adapter.dedicated_bytes or 0) < 2 * 1024**3 for adapter in adapters):
            report.write("  An integrated GPU such as the Radeon 780M keeps the model in shared system memory:")
            report.write("  the shared figure, not the dedicated one, bounds the model size.")
    unmatched = directml is None or not adapters or any(adapter.shared_bytes is None for adapter in adapters)
    if windows_adapters and unmatched:  # the memory figures Windows has, when DirectML's names do not match
        for adapter in windows_adapters:
            kind = " (software)" if adapter.software else ""
            report.item("Windows adapter", f"{adapter.name}{kind}: {format_bytes(adapter.dedicated_bytes)} dedicated, "
                        f"{format_bytes(adapter.shared_bytes)} shared")


# ------------------------------------------------------------------------------- device choice


def report_device_choice(report: Report, settings: Settings) -> devices.DeviceChoice | None:
    report.section("Device")
    requested = settings.model.device
    report.item("config asks", f"device = {requested}" + (" (DirectML, then CUDA, then the CPU)" if requested == "auto" else ""))
    try:
        choice = devices.choose_device(requested)
    except devices.DeviceUnavailable as error:
        report.problem(
            f"the server would not start: {requested} is not usable: {error}",
            "install torch-directml (run setup.ps1 without -Cpu) and update the graphics driver, "
            "or set [model] device = auto",
        )
        return None
    except Exception as error:
        report.problem(
            f"the {requested} device is broken: choosing it raised {type(error).__name__}: {error}",
            "update the graphics driver and restart Windows; meanwhile set [model] device = cpu",
        )
        return None
    report.item("would use", f"{choice.kind} ({choice.name})")
    report.item("because", choice.reason)
    for kind, why in choice.skipped.items():
        report.item(f"{kind} skipped", why)
    if requested == "auto" and choice.kind == "cpu" and sys.platform == "win32":
        report.warn(
            "no GPU is used: transcription runs on the CPU",
            "run setup.ps1 without -Cpu to install torch-directml, then run doctor again",
        )
    return choice


# -------------------------------------------------------------------------------- tensor check


@dataclass(frozen=True)
class OperationCheck:
    name: str
    largest_difference: float | None  # None when the device raised
    tolerance: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.largest_difference is not None and self.largest_difference <= self.tolerance


def _operations(attention: str) -> dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]]:
    """The kinds of operation Whisper runs, on inputs shaped like a small Whisper layer."""
    functional = torch.nn.functional
    operations: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] = {
        "matrix multiply": lambda t: t["queries"] @ t["keys"].transpose(-1, -2),
        "softmax": lambda t: torch.softmax(t["queries"] @ t["keys"].transpose(-1, -2) / 8.0, dim=-1),
        "convolution": lambda t: functional.conv1d(t["features"], t["filters"], padding=1),
        "layer norm": lambda t: functional.layer_norm(t["queries"], (t["queries"].shape[-1],)),
        "GELU": lambda t: functional.gelu(t["queries"]),
    }
    if attention == "sdpa":
        operations["attention (sdpa)"] = lambda t: functional.scaled_dot_product_attention(
            t["queries"], t["keys"], t["values"]
        )
    return operations


def check_operations(device: torch.device, dtype: torch.dtype, attention: str) -> list[OperationCheck]:
    """Run each operation on `device` in `dtype` and compare it with float32 on the CPU."""
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "queries": torch.randn(1, 4, 32, 64, generator=generator),
        "keys": torch.randn(1, 4, 32, 64, generator=generator),
        "values": torch.randn(1, 4, 32, 64, generator=generator),
        "features": torch.randn(1, 80, 100, generator=generator),
        "filters": torch.randn(64, 80, 3, generator=generator) * 0.1,
    }
    # Relative to the result's size: float16 keeps about 3 significant digits, bfloat16 about 2.
    tolerance = {torch.float32: 1e-3, torch.float16: 2e-2}.get(dtype, 4e-2)
    checks = []
    for name, operation in _operations(attention).items():
        try:
            expected = operation(inputs)
            on_device = {key: value.to(device=device, dtype=dtype) for key, value in inputs.items()}
            actual = operation(on_device).to(device="cpu", dtype=torch.float32)
            if actual.shape != expected.shape:
                raise RuntimeError(f"shape {tuple(actual.shape)} instead of {tuple(expected.shape)}")
            if not torch.isfinite(actual).all():
                difference = float("inf")
            else:
                scale = max(float(expected.abs().max()), 1.0)
                difference = float((actual - expected).abs().max()) / scale
            checks.append(OperationCheck(name, difference, tolerance))
        except Exception as error:
            checks.append(OperationCheck(name, None, tolerance, f"{type(error).__name__}: {error}".strip()))
    return checks


def report_tensor_check(report: Report, choice: devices.DeviceChoice, settings: Settings) -> bool:
    report.section("Tensor check")
    dtype_name = devices.resolve_dtype(settings.model.dtype, choice.kind)
    dtype = getattr(torch, dtype_name)
    checks = check_operations(choice.device, dtype, settings.model.attention)
    for check in checks:
        if check.passed:
            report.ok(f"{check.name}: matches the CPU (largest difference {check.largest_difference:.1e})")
        elif check.error is not None:
            first_line = check.error.splitlines()[0][:300]
            report.problem(f"{check.name} on {choice.kind} ({dtype_name}) raised {first_line}", _operation_advice(check, dtype_name))
        else:
            report.problem(
                f"{check.name} on {choice.kind} ({dtype_name}) gives wrong results "
                f"(difference {check.largest_difference:.1e}, allowed {check.tolerance:.0e})",
                _operation_advice(check, dtype_name),
            )
    return all(check.passed for check in checks)


def _operation_advice(check: OperationCheck, dtype_name: str) -> str:
    if check.name == "attention (sdpa)":
        return "set [model] attention = eager"
    if dtype_name != "float32":
        return f"set [model] dtype = float32 ({dtype_name} is unstable on some devices and drivers)"
    return "update the graphics driver; until then set [model] device = cpu"


# ----------------------------------------------------------------------------- CPU fallbacks


@dataclass
class FallbackWatcher:
    """Collects DirectML's "will fall back to run on the CPU" messages from warnings and logs."""

    messages: list[str] = field(default_factory=list)

    @contextmanager
    def watching(self) -> Iterator[None]:
        watcher = self

        class Collector(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    message = record.getMessage()
                except Exception:
                    return
                if FALLBACK_PATTERN.search(message):
                    watcher.messages.append(message)

        handler = Collector(level=logging.WARNING)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
        finally:
            root.removeHandler(handler)
        for warning in caught:
            message = str(warning.message)
            if FALLBACK_PATTERN.search(message):
                self.messages.append(message)
            else:  # not ours to count: show it as Python would have
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)

    def operators(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for message in self.messages:
            match = OPERATOR_PATTERN.search(message)
            counts[(match.group(1) or match.group(2)) if match else "an unnamed operator"] += 1
        return counts


def report_fallbacks(report: Report, watcher: FallbackWatcher, choice: devices.DeviceChoice | None) -> None:
    report.section("CPU fallbacks")
    if choice is None or choice.kind == "cpu":
        report.item("none", "the CPU is the device, so nothing falls back")
        return
    operators = watcher.operators()
    if not operators:
        report.ok(f"no operator fell back to the CPU on {choice.kind} (0 warnings)")
        return
    report.warn(
        f"{len(watcher.messages)} warning(s): {len(operators)} operator(s) ran on the CPU instead of {choice.kind}",
        "results stay correct, but each one copies data between GPU and CPU. If the real-time factor "
        "above is fine, ignore this; if it is slow, try [model] attention = eager, or compare with device = cpu",
    )
    for operator, count in operators.most_common():
        report.item("operator", f"{operator} ({count}x)")


# ------------------------------------------------------------------------- model, transcription


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Edit distance over characters, ignoring spaces, punctuation and full/half-width forms."""

    def characters(text: str) -> list[str]:
        normalized = unicodedata.normalize("NFKC", text).casefold()
        return [c for c in normalized if not c.isspace() and not unicodedata.category(c).startswith("P")]

    expected, heard = characters(reference), characters(hypothesis)
    if not expected:
        return 0.0 if not heard else 1.0
    previous = list(range(len(heard) + 1))
    for row, wanted in enumerate(expected, start=1):
        current = [row]
        for column, got in enumerate(heard, start=1):
            current.append(min(previous[column] + 1, current[column - 1] + 1, previous[column - 1] + (wanted != got)))
        previous = current
    return previous[-1] / len(expected)


def report_model_load(report: Report, settings: Settings):
    """Load the model the way the server does; None when it fails."""
    from .engine import Engine

    report.section("Model")
    report.item("model", settings.model.name)
    report.item("settings", f"dtype = {settings.model.dtype}, attention = {settings.model.attention}")
    report.write("  loading (the first time, a Hugging Face model id is downloaded into the Hugging Face cache) ...")
    started = time.perf_counter()
    try:
        engine = Engine.load(dataclasses.replace(settings.model, warmup=False), settings.server.max_queue)
    except Exception as error:
        message = f"{type(error).__name__}: {error}".splitlines()[0][:400]
        report.problem(f"the model did not load: {message}", _load_advice(message, settings))
        return None
    elapsed = time.perf_counter() - started
    parameters = sum(parameter.numel() for parameter in engine.pipeline.model.parameters())
    weight_bytes = sum(parameter.numel() * parameter.element_size() for parameter in engine.pipeline.model.parameters())
    report.ok(f"loaded on {engine.device.kind} in {elapsed:.1f} s "
              f"({parameters / 1e6:.0f} M parameters, {format_bytes(weight_bytes)} of weights)")
    return engine


def _load_advice(message: str, settings: Settings) -> str:
    lowered = message.lower()
    if "memory" in lowered or "e_outofmemory" in lowered or "887a0005" in lowered:
        return "choose a smaller model or dtype = float16 (README: model choice for the 780M), close other GPU apps"
    if "offline" in lowered or "connection" in lowered or "not found" in lowered or "does not appear" in lowered:
        return (f"download it once while online: setup.ps1 -Model {settings.model.name}, "
                "or set [model] name to a local folder with a transformers Whisper checkpoint")
    return "check [model] name (a Hugging Face id such as openai/whisper-large-v3-turbo, or a local folder)"


def report_transcription(report: Report, engine) -> None:
    from .audio import decode
    from .transcript import TranscriptionJob

    report.section("Transcription")
    expected = CLIP_TEXT_PATH.read_text(encoding="utf-8").strip()
    audio = decode(CLIP_PATH.read_bytes())
    report.item("clip", f"{audio.duration:.1f} s of Japanese speech shipped with whisper-api ({CLIP_PATH.name})")
    report.item("expected", expected)
    if CLIP_LANGUAGE not in engine.supported_languages:
        report.warn("this model has no Japanese (an English-only model?): the clip was not transcribed")
        return
    job = TranscriptionJob(samples=audio.samples, language=CLIP_LANGUAGE)
    timings = []
    text = ""
    try:
        for _ in range(2):  # the first run includes one-time start-up work on the device
            started = time.perf_counter()
            text = engine.transcribe(job).text
            timings.append(time.perf_counter() - started)
    except Exception as error:
        report.problem(
            f"transcription failed on {engine.device.kind}: {type(error).__name__}: {error}".splitlines()[0][:400],
            "run with --debug for the traceback; try [model] attention = eager and dtype = float32, or device = cpu",
        )
        return
    report.item("heard", text or "(nothing)")
    error_rate = character_error_rate(expected, text)
    real_time_factor = timings[-1] / audio.duration
    report.item("first run", f"{timings[0]:.2f} s (includes one-time start-up on the device)")
    report.item("second run", f"{timings[-1]:.2f} s: real-time factor {real_time_factor:.2f} "
                f"({'faster' if real_time_factor < 1 else 'slower'} than real time)")
    report.item("errors", f"character error rate {error_rate:.0%}")
    if error_rate > BROKEN_CHARACTER_ERROR_RATE:
        report.problem(
            f"the transcript has almost nothing in common with the speech (character error rate {error_rate:.0%})",
            "the device computes wrong results: set [model] dtype = float32 and attention = eager, "
            "update the graphics driver, or set device = cpu",
        )
    elif error_rate > GOOD_CHARACTER_ERROR_RATE:
        report.warn(
            f"the clip was heard poorly (character error rate {error_rate:.0%})",
            "small models are weak in Japanese: try openai/whisper-large-v3-turbo or kotoba-tech/kotoba-whisper-v2.0",
        )
    else:
        report.ok("the clip was transcribed correctly")
    if real_time_factor > 1:
        report.warn(
            f"slower than real time: a 10-minute recording would take about {10 * real_time_factor:.0f} minutes",
            "choose a smaller model (README: model choice for the 780M), or check the CPU fallbacks below",
        )


# ------------------------------------------------------------------------------------ the run


def run_doctor(settings: Settings, out: TextIO | None = None) -> int:
    """Print the report; 1 when the configured device or model would not work, else 0."""
    report = Report(out if out is not None else sys.stdout)
    report.write(f"whisper-api doctor (config: {settings.source})")
    report_versions(report)
    report_adapters(report)
    watcher = FallbackWatcher()
    choice = None
    with watcher.watching():
        choice = report_device_choice(report, settings)
        device_works = choice is not None and report_tensor_check(report, choice, settings)
        if device_works:
            engine = report_model_load(report, settings)
            if engine is not None:
                report_transcription(report, engine)
        elif choice is not None:
            report.section("Model")
            report.item("skipped", "the device failed the tensor check, so the model was not loaded")
    report_fallbacks(report, watcher, choice)
    report.section("Result")
    if report.problems:
        report.write(f"  {len(report.problems)} problem(s): the server would not work correctly with this configuration.")
        for problem in report.problems:
            report.write(f"  - {problem}")
        return 1
    if report.warnings:
        report.write(f"  Usable, with {len(report.warnings)} warning(s) above worth reading.")
    else:
        report.write("  All good: start the server with run.ps1 (or python -m whisper_api).")
    return 0
