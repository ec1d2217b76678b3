"""A server process's memory: a tiny upload that decompresses into hours of audio is refused
within a small constant of max_audio_seconds of samples, and memory a job took is given back."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile

from tests.support.server_process import server_process
from tests.support.speech import MEETING_SENTENCES, concatenate, encode, japanese_speech

MAX_AUDIO_SECONDS = 600
SAMPLE_BYTES = 4  # float32
# Decoded audio is held at most twice over (its blocks, then joined) at 16 kHz; blocks, the
# resampler and the form parser's copy of the upload come on top.
BOMB_MEMORY_LIMIT = 3 * MAX_AUDIO_SECONDS * 16000 * SAMPLE_BYTES + 100 * 2**20
IDLE_MEMORY_MARGIN = 300 * 2**20

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory read from /proc")


class PeakMemory:
    """Peak resident memory of a process over a block: the kernel's high-water mark, reset first
    (Linux), and a 5 ms sampler besides (in case the reset is not allowed)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.process = psutil.Process(pid)
        self.sampled = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        self.baseline = self.process.memory_info().rss
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sampled = max(self.sampled, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *_exception) -> None:
        self._stop.set()
        self._sampler.join()
        high_water = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                high_water = int(line.split()[1]) * 1024
        self.peak = max(self.sampled, high_water)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@pytest.fixture(scope="module")
def ten_hours_of_silence(pytestconfig, tmp_path_factory) -> bytes:
    """A 1.9 MB FLAC of 10 hours of 16 kHz silence (encoding it takes about 20 s: cached where
    pytest's cache is on)."""
    cache = getattr(pytestconfig, "cache", None)  # None under -p no:cacheprovider
    folder = cache.mkdir("whisper-api-audio") if cache is not None else tmp_path_factory.mktemp("audio")
    cached = folder / "ten-hours-of-silence.flac"
    if not cached.exists():
        buffer = io.BytesIO()
        block = np.zeros(16000 * 600, dtype=np.int16)
        with soundfile.SoundFile(buffer, "w", samplerate=16000, channels=1, format="FLAC", subtype="PCM_16") as file:
            for _ in range(60):
                file.write(block)
        cached.write_bytes(buffer.getvalue())
    return cached.read_bytes()


def without_declared_length(flac: bytes) -> bytes:
    """The same FLAC, its STREAMINFO's total-samples field zeroed ("unknown", as a streamed
    encoder writes it): nothing in the header tells the length."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC"
    info = 8  # after "fLaC" and the metadata block header
    bits = int.from_bytes(data[info : info + 34], "big")
    shift = 34 * 8 - 108 - 36  # total samples: 36 bits from bit 108 of STREAMINFO
    bits &= ~(((1 << 36) - 1) << shift)
    data[info : info + 34] = bits.to_bytes(34, "big")
    return bytes(data)


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    directory = tmp_path_factory.mktemp("memory")
    with server_process(directory, model_dir, server="max_upload_mb = 25\nthreads = 8\n",
                        model_extra=f"max_audio_seconds = {MAX_AUDIO_SECONDS}\n") as process:
        yield process


@pytest.mark.parametrize("header", ["declares 10 hours", "declares no length"])
def test_a_tiny_flac_of_ten_hours_is_refused_within_bounded_memory(server, ten_hours_of_silence, header):
    upload = ten_hours_of_silence if header == "declares 10 hours" else without_declared_length(ten_hours_of_silence)
    assert len(upload) < 3 * 2**20
    with PeakMemory(server.pid) as memory:
        response = server.post(upload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "file" and f"at most {MAX_AUDIO_SECONDS}" in error["message"]
    print(f"{header}: peak growth {memory.growth / 2**20:.0f} MB (limit {BOMB_MEMORY_LIMIT / 2**20:.0f} MB)")
    assert memory.growth < BOMB_MEMORY_LIMIT
    if header == "declares 10 hours":
        assert memory.growth < 100 * 2**20, "a declared length over the limit must be refused before decoding"


def test_two_bombs_at_once_stay_within_twice_the_bound(server, ten_hours_of_silence):
    upload = without_declared_length(ten_hours_of_silence)
    results: list = []
    with PeakMemory(server.pid) as memory:
        threads = [threading.Thread(target=lambda: results.append(server.post(upload))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert [response.status_code for response in results] == [400, 400]
    print(f"two at once: peak growth {memory.growth / 2**20:.0f} MB")
    assert memory.growth < 2 * BOMB_MEMORY_LIMIT


def idle_memory(pid: int) -> int:
    """Resident memory once the server has settled (the access log and the allocator trim run
    just after the response)."""
    process = psutil.Process(pid)
    readings = []
    for _ in range(5):
        time.sleep(0.3)
        readings.append(process.memory_info().rss)
    return min(readings)


def test_idle_memory_returns_near_its_level_before_any_job(server):
    short, _ = concatenate(*[japanese_speech(sentence) for sentence in MEETING_SENTENCES[:8]], gap_seconds=0.6)
    long, _ = concatenate(*[japanese_speech(sentence) for sentence in MEETING_SENTENCES * 2], gap_seconds=0.6)
    short_upload, long_upload = encode(short, "wav"), encode(long, "flac")
    before = idle_memory(server.pid)
    for _ in range(12):
        assert server.post(short_upload).status_code == 200
    assert server.post(long_upload).status_code == 200
    after = idle_memory(server.pid)
    print(f"idle before jobs {before / 2**20:.0f} MB, after 13 jobs {after / 2**20:.0f} MB")
    assert after - before < IDLE_MEMORY_MARGIN



FAULT_PROBE = """
import resource, sys, torch
from whisper_api.memory import configure_allocator
if sys.argv[1] == "configured":
    configure_allocator()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(24):
    before = faults()
    block = torch.empty(1500, 3072)  # Whisper small's encoder MLP activation: 18 MB of float32
    block.fill_(1.0)
    del block
    counts.append(faults() - before)
print(max(counts[-8:]))  # glibc settles aligned blocks after a few rounds
"""


def faults_per_block(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return int(done.stdout.split()[-1])


def test_model_sized_blocks_are_reused_while_a_job_runs_not_faulted_in_again():
    """The server's allocator set-up (whisper_api/memory.py) keeps blocks of up to 32 MB (encoder
    activations, decoder caches) in its arenas between model calls: each call reuses the pages
    the last one touched. Without it, glibc maps such a block on its own and unmaps it when
    freed, and each of its 4 KB pages is faulted in again at the next call (4 million faults on
    a 10-minute lecture with the 4 MB threshold this server once had)."""
    block_pages = 1500 * 3072 * 4 // 4096
    configured = faults_per_block("configured")
    print(f"faults per 18 MB block once warm: {configured} with the server's set-up ({block_pages} pages)")
    assert configured < block_pages // 20
