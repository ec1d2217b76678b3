"""Which bfloat16 instructions this CPU has (AVX512-BF16, AMX), on every torch we support.

torch >= 2.5 answers through `torch.cpu._is_avx512_bf16_supported` / `_is_amx_tile_supported`;
torch 2.4.1, the one torch-directml pins on Windows, has neither. There the flags come from
/proc/cpuinfo (Linux) or from the CPUID instruction itself (Windows has no
IsProcessorFeaturePresent flag for them), run as a few bytes of machine code through ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import platform
import sys
from pathlib import Path
from typing import NamedTuple

BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_tile", "amx_bf16"})  # named as /proc/cpuinfo names them
# XCR0: the OS saves AVX-512 state (SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM) and AMX tile state.
AVX512_STATE = 0b1110_0110
AMX_STATE = 0b11 << 17

# void cpuid(uint32 leaf, uint32 subleaf, uint32 registers[4]): push rbx; eax, ecx = leaf, subleaf;
# cpuid; store eax, ebx, ecx, edx; pop rbx; ret. The arguments arrive in other registers per ABI.
_STORE_AND_RETURN = bytes.fromhex("0fa2 418900 41895804 41894808 4189500c 5b c3".replace(" ", ""))
CPUID_SYSTEM_V = bytes.fromhex("53 89f8 89f1 4989d0".replace(" ", "")) + _STORE_AND_RETURN  # rdi, rsi, rdx
CPUID_WINDOWS = bytes.fromhex("53 89c8 89d1".replace(" ", "")) + _STORE_AND_RETURN  # rcx, rdx, r8
# uint64 xgetbv0(void): xor ecx, ecx; xgetbv; shl rdx, 32; or rax, rdx; ret
XGETBV = bytes.fromhex("31c9 0f01d0 48c1e220 4809d0 c3".replace(" ", ""))


class Registers(NamedTuple):
    eax: int
    ebx: int
    ecx: int
    edx: int


def bit(value: int, index: int) -> bool:
    return bool(value >> index & 1)


def flags_from_cpuid(leaf_0: Registers, leaf_1: Registers, leaf_7_0: Registers, leaf_7_1: Registers,
                     xcr0: int) -> frozenset[str]:
    """The bfloat16 flags these CPUID leaves announce and the OS (XCR0) has enabled."""
    if leaf_0.eax < 7 or not bit(leaf_1.ecx, 27):  # no leaf 7, or no OSXSAVE: XCR0 unreadable
        return frozenset()
    flags = set()
    if leaf_7_0.eax >= 1 and bit(leaf_7_1.eax, 5) and xcr0 & AVX512_STATE == AVX512_STATE:
        flags.add("avx512_bf16")
    if xcr0 & AMX_STATE == AMX_STATE:
        flags |= {name for name, index in (("amx_tile", 24), ("amx_bf16", 22)) if bit(leaf_7_0.edx, index)}
    return frozenset(flags)


class MachineCode:
    """A few bytes of x86-64 code in executable memory, callable through ctypes."""

    def __init__(self, code: bytes, function_type: type) -> None:
        self._release = lambda: None
        if sys.platform == "win32":
            kernel32 = ctypes.windll.kernel32
            kernel32.VirtualAlloc.restype = ctypes.c_void_p
            kernel32.VirtualAlloc.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_ulong, ctypes.c_ulong)
            address = kernel32.VirtualAlloc(None, len(code), 0x3000, 0x40)  # commit+reserve, read-write-execute
            if not address:
                raise OSError("VirtualAlloc refused executable memory")
            self._release = lambda: kernel32.VirtualFree(ctypes.c_void_p(address), 0, 0x8000)
        else:
            memory = mmap.mmap(-1, len(code), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
            self._memory = memory  # unmapped when this object goes
        ctypes.memmove(address, code, len(code))
        self.function = function_type(address)

    def __del__(self) -> None:
        self._release()


def cpuid_flags() -> frozenset[str]:
    """The bfloat16 flags, read with the CPUID instruction (x86-64 only)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return frozenset()
    registers = (ctypes.c_uint32 * 4)()
    code = CPUID_WINDOWS if sys.platform == "win32" else CPUID_SYSTEM_V
    cpuid_code = MachineCode(code, ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                                                    ctypes.POINTER(ctypes.c_uint32)))

    def cpuid(leaf: int, subleaf: int = 0) -> Registers:
        cpuid_code.function(leaf, subleaf, registers)
        return Registers(*registers)

    leaf_0, leaf_1 = cpuid(0), cpuid(1)
    if leaf_0.eax < 7 or not bit(leaf_1.ecx, 27):
        return frozenset()
    xgetbv_code = MachineCode(XGETBV, ctypes.CFUNCTYPE(ctypes.c_uint64))  # held while it runs
    xcr0 = xgetbv_code.function()
    return flags_from_cpuid(leaf_0, leaf_1, cpuid(7, 0), cpuid(7, 1), xcr0)


def proc_cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The bfloat16 flags Linux lists for the first CPU, or None where there is no such file."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return BFLOAT16_FLAGS & set(value.split())
    return frozenset()


def torch_probe() -> bool | None:
    """torch's own answer where this torch has the probes (>= 2.5), else None."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return None


@functools.lru_cache(maxsize=1)
def bfloat16_is_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere torch
    emulates it, more slowly than float32."""
    answer = torch_probe()
    if answer is not None:
        return answer
    flags = proc_cpuinfo_flags()
    if flags is None:
        try:
            flags = cpuid_flags()
        except (OSError, ValueError, AttributeError):  # no executable memory here: assume emulation
            flags = frozenset()
    return bool(flags & {"avx512_bf16", "amx_tile"})
