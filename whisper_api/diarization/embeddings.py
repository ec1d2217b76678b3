"""Speaker embeddings of stretches of a clip: CAM++ loaded once, fbank computed once per clip."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from .features import FRAME_LENGTH, FRAME_SHIFT, SAMPLE_RATE, fbank, normalise_window
from .network import EMBEDDING_SIZE, CAMPlusPlus
from .weights import verified_weights

MIN_WINDOW_FRAMES = 20  # 0.2 s: the front end needs a few frames; shorter stretches are widened
BATCH_WINDOWS = 64


class SpeakerEmbedder:
    """CAM++ on the CPU in float32 (6.8 M parameters: about a second per minute of speech)."""

    def __init__(self, weights: Path | None = None) -> None:
        self.weights_path = verified_weights(weights)
        network = CAMPlusPlus()
        network.load_state_dict(torch.load(self.weights_path, map_location="cpu", weights_only=True))
        self.network = network.eval()
        self._lock = threading.Lock()  # one clip at a time: each already uses every core

    def embed(self, samples: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray:
        """(len(spans), 192) unit-length embeddings of the [start, end) stretches, in seconds."""
        if not spans:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        shortest = FRAME_LENGTH + (MIN_WINDOW_FRAMES - 1) * FRAME_SHIFT
        if len(samples) < shortest:  # a clip of a fraction of a second: silence makes up the frames
            samples = np.pad(samples, (0, shortest - len(samples)))
        features = fbank(torch.from_numpy(samples))
        frame_spans = [frame_range(start, end, features.shape[0]) for start, end in spans]
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, (first, last) in enumerate(frame_spans):
            by_length[last - first].append(index)
        embeddings = np.zeros((len(spans), EMBEDDING_SIZE), dtype=np.float32)
        with self._lock, torch.no_grad():
            for length, indices in by_length.items():
                for offset in range(0, len(indices), BATCH_WINDOWS):
                    chunk = indices[offset : offset + BATCH_WINDOWS]
                    batch = torch.stack([features[frame_spans[i][0] : frame_spans[i][1]] for i in chunk])
                    output = self.network(normalise_window(batch))
                    embeddings[chunk] = torch.nn.functional.normalize(output, dim=1).numpy()
        return embeddings

    def embed_clip(self, samples: np.ndarray) -> np.ndarray:
        """One (192,) unit-length embedding of a whole clip (a known speaker's reference)."""
        return self.embed(samples, [(0.0, len(samples) / SAMPLE_RATE)])[0]


def frame_range(start: float, end: float, frame_total: int) -> tuple[int, int]:
    """Frames [first, last) whose 25 ms lie inside [start, end), widened to MIN_WINDOW_FRAMES."""
    first = max(0, int(round(start * SAMPLE_RATE / FRAME_SHIFT)))
    last = int((end * SAMPLE_RATE - FRAME_LENGTH) // FRAME_SHIFT) + 1
    last = min(frame_total, max(last, first + 1))
    if last - first < MIN_WINDOW_FRAMES:
        middle = (first + last) // 2
        first = max(0, min(middle - MIN_WINDOW_FRAMES // 2, frame_total - MIN_WINDOW_FRAMES))
        last = min(frame_total, first + MIN_WINDOW_FRAMES)
    return first, last
