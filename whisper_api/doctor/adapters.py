"""Adapters: what Windows (DXGI) lists with its memory sizes, matched by name to the adapters the
DirectML probe found (whisper_api.devices), and the report section that shows both."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import devices
from .report import Report, format_bytes

DXGI_ADAPTER_FLAG_SOFTWARE = 2


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
    float64_support: bool | None = None

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


def _adapter_key(name: str) -> str:
    """Adapter names compared without case, spaces and trademark signs."""
    return re.sub(r"\((?:tm|r)\)|[\s\u2122\u00ae]", "", name.casefold())


def match_windows_memory(
    directml_adapters: Sequence[devices.DirectMLAdapter], windows_adapters: Sequence[WindowsAdapter]
) -> list[Adapter]:
    """The probe's DirectML adapters, each given the memory sizes of DXGI's entry of the same name."""
    unmatched = [adapter for adapter in windows_adapters if not adapter.software] + [
        adapter for adapter in windows_adapters if adapter.software
    ]
    adapters = []
    for found in directml_adapters:
        match = next((adapter for adapter in unmatched if _adapter_key(adapter.name) == _adapter_key(found.name)), None)
        if match is not None:
            unmatched.remove(match)
        adapters.append(Adapter(
            index=found.index,
            name=found.name,
            dedicated_bytes=match.dedicated_bytes if match else None,
            shared_bytes=match.shared_bytes if match else None,
            in_use_bytes=found.in_use_bytes,
            float64_support=found.float64_support,
        ))
    return adapters


def report_adapters(report: Report) -> None:
    report.section("DirectML adapters")
    windows_adapters = list_windows_adapters()
    adapters: list[Adapter] = []
    try:
        probe = devices.probe_directml_adapters()
    except devices.DeviceUnavailable as error:
        report.item("torch-directml", error.reason)
        if error.advice:
            report.item("", f"-> {error.advice}")
    else:
        adapters = match_windows_memory(probe.adapters, windows_adapters)
        for adapter in adapters:
            report.item(f"adapter {adapter.index}", f"{adapter.name}: {adapter.describe_memory()}")
            report.item("", f"float64: {FLOAT64_SUPPORT[adapter.float64_support]}")
        if any(adapter.shared_bytes and (adapter.dedicated_bytes or 0) < 2 * 1024**3 for adapter in adapters):
            report.write("  An integrated GPU such as the Radeon 780M keeps the model in shared system memory:")
            report.write("  the shared figure, not the dedicated one, bounds the model size.")
    if windows_adapters and (not adapters or any(adapter.shared_bytes is None for adapter in adapters)):
        for adapter in windows_adapters:  # the memory figures Windows has, when DirectML's names do not match
            kind = " (software)" if adapter.software else ""
            report.item("Windows adapter", f"{adapter.name}{kind}: {format_bytes(adapter.dedicated_bytes)} dedicated, "
                        f"{format_bytes(adapter.shared_bytes)} shared")


FLOAT64_SUPPORT = {
    True: "supported",
    False: "not supported (whisper-api decodes without float64)",
    None: "unknown (this torch-directml cannot tell)",
}
