"""Kaldi-style 80-bin log mel filter-bank features, as CAM++ was trained on, in plain torch.

The settings are Kaldi's `compute-fbank-feats` defaults (what 3D-Speaker's `FBank` asks for):
25 ms frames every 10 ms with edges snipped, DC offset removed, pre-emphasis 0.97, Povey window,
a 512-point power spectrum, 80 triangular bins on Kaldi's mel scale from 20 Hz to Nyquist, and
the natural log floored at float32's epsilon. Mean normalisation over time is per window
(`normalise_window`), as 3D-Speaker does per segment.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

SAMPLE_RATE = 16_000
MEL_BINS = 80
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # the frame length rounded up to a power of two
PREEMPHASIS = 0.97
LOW_FREQUENCY = 20.0
LOG_FLOOR = torch.finfo(torch.float32).eps


def mel_scale(frequency: torch.Tensor) -> torch.Tensor:
    """Kaldi's mel scale (natural log, 1127), not librosa's Slaney one."""
    return 1127.0 * torch.log1p(frequency / 700.0)


@lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    """(FFT_SIZE // 2 + 1, MEL_BINS): Kaldi's triangles, built in the mel domain."""
    high_frequency = SAMPLE_RATE / 2
    low_mel = mel_scale(torch.tensor(LOW_FREQUENCY, dtype=torch.float64))
    high_mel = mel_scale(torch.tensor(high_frequency, dtype=torch.float64))
    delta = (high_mel - low_mel) / (MEL_BINS + 1)
    left = low_mel + torch.arange(MEL_BINS, dtype=torch.float64).unsqueeze(1) * delta
    center = left + delta
    right = center + delta
    bin_width = SAMPLE_RATE / FFT_SIZE
    mels = mel_scale(bin_width * torch.arange(FFT_SIZE // 2, dtype=torch.float64)).unsqueeze(0)
    rising = (mels - left) / (center - left)
    falling = (right - mels) / (right - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = torch.nn.functional.pad(weights, (0, 1))  # Kaldi leaves the Nyquist bin out
    return weights.T.to(torch.float32).contiguous()


@lru_cache(maxsize=1)
def povey_window() -> torch.Tensor:
    return torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float64).pow(0.85).to(torch.float32)


def frame_count(sample_count: int) -> int:
    return 0 if sample_count < FRAME_LENGTH else 1 + (sample_count - FRAME_LENGTH) // FRAME_SHIFT


def fbank(samples: torch.Tensor) -> torch.Tensor:
    """(frames, 80) log mel energies of float32 mono 16 kHz samples in [-1, 1]."""
    samples = samples.to(torch.float32).flatten()
    count = frame_count(samples.numel())
    if count == 0:
        return torch.zeros((0, MEL_BINS), dtype=torch.float32)
    frames = samples.as_strided((count, FRAME_LENGTH), (FRAME_SHIFT, 1))
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - PREEMPHASIS * previous) * povey_window()
    power = torch.fft.rfft(frames, n=FFT_SIZE).abs().pow(2)
    return torch.clamp(power @ mel_filters(), min=LOG_FLOOR).log()


def normalise_window(features: torch.Tensor) -> torch.Tensor:
    """Subtract each window's mean over time: (..., frames, bins)."""
    return features - features.mean(dim=-2, keepdim=True)


def frames_for_seconds(seconds: float) -> int:
    return max(1, math.floor((seconds * SAMPLE_RATE - FRAME_LENGTH) / FRAME_SHIFT) + 1)
