"""bfloat16 detection works on torch 2.4.1 (no torch probes) as on newer torch, Zen 4 included."""

from __future__ import annotations

import platform

import pytest

from whisper_api import cpu_features
from whisper_api.cpu_features import AMX_STATE, AVX512_STATE, Registers, flags_from_cpuid

X86_64 = platform.machine().lower() in ("x86_64", "amd64")
LINUX_FLAGS = cpu_features.proc_cpuinfo_flags()
OSXSAVE = 1 << 27
LEAF_0 = Registers(0x10, 0, 0, 0)
LEAF_1 = Registers(0, 0, OSXSAVE, 0)
LEAF_7_0 = Registers(1, 0, 0, 0)  # eax: the highest subleaf of leaf 7
AVX512_BF16_LEAF = Registers(1 << 5, 0, 0, 0)  # leaf 7 subleaf 1, eax bit 5
AMX_LEAF_7_0 = Registers(1, 0, 0, 1 << 24 | 1 << 22)  # edx: AMX-TILE, AMX-BF16
NO_BITS = Registers(0, 0, 0, 0)


def test_zen4_announces_avx512_bf16_and_no_amx():
    """Ryzen 7040/8040 (the 780M's CPUs): AVX512-BF16 in leaf 7 subleaf 1, no AMX."""
    assert flags_from_cpuid(LEAF_0, LEAF_1, LEAF_7_0, AVX512_BF16_LEAF, AVX512_STATE) == {"avx512_bf16"}


def test_sapphire_rapids_announces_amx_when_the_os_enables_tiles():
    flags = flags_from_cpuid(LEAF_0, LEAF_1, AMX_LEAF_7_0, AVX512_BF16_LEAF, AVX512_STATE | AMX_STATE)
    assert flags == {"avx512_bf16", "amx_tile", "amx_bf16"}


@pytest.mark.parametrize(
    ("leaf_0", "leaf_1", "xcr0"),
    [(LEAF_0, LEAF_1, 0b111), (LEAF_0, NO_BITS, AVX512_STATE | AMX_STATE), (Registers(6, 0, 0, 0), LEAF_1, AVX512_STATE)],
    ids=["os-saves-no-avx512-state", "no-osxsave", "no-leaf-7"],
)
def test_instructions_the_os_cannot_run_are_not_announced(leaf_0, leaf_1, xcr0):
    assert flags_from_cpuid(leaf_0, leaf_1, AMX_LEAF_7_0, AVX512_BF16_LEAF, xcr0) == frozenset()


@pytest.mark.skipif(not X86_64 or LINUX_FLAGS is None, reason="needs an x86-64 Linux to compare CPUID with")
def test_cpuid_reads_what_linux_lists():
    assert cpu_features.cpuid_flags() == LINUX_FLAGS


@pytest.mark.skipif(LINUX_FLAGS is None, reason="needs /proc/cpuinfo to know the answer")
def test_bfloat16_is_native_matches_the_cpu_on_this_torch():
    """On torch 2.4.1 the flags decide; on newer torch its own probes, which must agree."""
    cpu_features.bfloat16_is_native.cache_clear()
    expected = bool(LINUX_FLAGS & {"avx512_bf16", "amx_tile"})
    assert cpu_features.bfloat16_is_native() is expected
    assert cpu_features.torch_probe() in (None, expected)
