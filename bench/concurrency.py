"""Concurrent requests through the live server: do they share the model's batches, and is a short
request served while a long one runs?

Two tables, one run, one server (Whisper base, float32, greedy, Japanese):

1. Eight clips of 10 to 20 s sent one after another, then the same eight at once: wall time of
   each way, the ratio, and whether every clip's transcript is the same both ways. With
   `--rounds N`, N rounds of both ways (at once first in every other round) and the median: on
   the project's 2-core machines one round's ratio moves by 0.05 or more.
2. A 10 s clip alone, then the same clip sent 1 s after a 10-minute file: its latency each way
   and the ratio, with the long file's time.

    python -m bench.concurrency [--model DIR] [--long-minutes 10] [--rounds N] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402

from bench.report import write_report  # noqa: E402
from bench.audio import long_clip, wav_bytes  # noqa: E402
from tests.support.speech import JAPANESE_SENTENCES, MEETING_SENTENCES, SAMPLE_RATE, concatenate, japanese_speech  # noqa: E402
from tests.support.whisper_checkpoint import ensure_whisper_base  # noqa: E402
from whisper_api import create_app  # noqa: E402
from whisper_api.config import DeploymentSettings, ModelSettings, ServerSettings, Settings  # noqa: E402
from whisper_api.engine import Engine  # noqa: E402
from whisper_api.server import create_server  # noqa: E402
from whisper_api.memory import settle_after_start_up  # noqa: E402

CLIPS = 8


def clips_of_10_to_20_seconds() -> list[np.ndarray]:
    """Eight clips, each of consecutive sentences, 10 to 20 s long, all different."""
    sentences = MEETING_SENTENCES + JAPANESE_SENTENCES
    clips: list[np.ndarray] = []
    start = 0
    while len(clips) < CLIPS:
        pieces: list[np.ndarray] = []
        index = start
        while sum(len(piece) for piece in pieces) < 10.5 * SAMPLE_RATE:
            pieces.append(japanese_speech(sentences[index % len(sentences)]))
            index += 1
        samples, _ = concatenate(*pieces, gap_seconds=0.6)
        clips.append(samples[: 20 * SAMPLE_RATE])
        start = index
    return clips


def ten_second_clip() -> np.ndarray:
    pieces = [japanese_speech(text) for text in JAPANESE_SENTENCES[:6]]
    samples, _ = concatenate(*pieces, gap_seconds=0.5)
    return samples[: 10 * SAMPLE_RATE]


def post(url: str, samples: np.ndarray) -> tuple[float, dict]:
    started = time.perf_counter()
    response = requests.post(url, headers={"api-key": "bench"}, files={"file": ("clip.wav", wav_bytes(samples))},
                             data={"language": "ja", "response_format": "verbose_json"}, timeout=7200)
    response.raise_for_status()
    return time.perf_counter() - started, response.json()


def texts(body: dict) -> list[tuple]:
    return [(segment["start"], segment["end"], segment["text"]) for segment in body["segments"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="transformers checkpoint (default: the tests' Whisper base)")
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--long-wait", type=float, default=7200.0,
                        help="seconds to wait for the long file once the short clip is back")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both ways (the table gives each and the median)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/concurrency.md"))
    arguments = parser.parse_args(argv)
    model = ModelSettings(name=arguments.model or str(ensure_whisper_base()), device="cpu", dtype="float32",
                          warmup=True)
    engine = Engine.load(model, max_queue=CLIPS, max_concurrent_jobs=CLIPS)
    settle_after_start_up()  # as the server does once its model is loaded
    clips = clips_of_10_to_20_seconds()
    short = ten_second_clip()
    long, _, _ = long_clip(arguments.long_minutes)
    settings = Settings(
        server=ServerSettings(max_upload_mb=len(long) * 2 / 2**20 + 2, max_queue=CLIPS, max_concurrent_jobs=CLIPS,
                              threads=2 * CLIPS + 2),
        model=model, deployments={"whisper": DeploymentSettings("whisper")}, source="bench",
    )
    server = create_server(create_app(settings, engine=engine), settings.server, host="127.0.0.1", port=0)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01"
    scheduler = engine.scheduler

    def one_after_another() -> tuple[float, list[tuple[float, dict]]]:
        started = time.perf_counter()
        answers = [post(url, samples) for samples in clips]
        return time.perf_counter() - started, answers

    shared: Counter[int] = Counter()  # decoding steps of the runs at once, by jobs sharing them

    def at_once() -> tuple[float, list[tuple[float, dict]]]:
        before = Counter(scheduler.steps_by_jobs)
        started = time.perf_counter()
        with ThreadPoolExecutor(CLIPS) as pool:
            answers = list(pool.map(lambda samples: post(url, samples), clips))
        seconds = time.perf_counter() - started
        shared.update(Counter(scheduler.steps_by_jobs) - before)
        return seconds, answers

    rounds: list[tuple[float, float, int]] = []  # (one after another s, at once s, transcripts as solo)
    for index in range(arguments.rounds):
        if index % 2:
            together_seconds, together = at_once()
            solo_seconds, solo = one_after_another()
        else:
            solo_seconds, solo = one_after_another()
            together_seconds, together = at_once()
        rounds.append((solo_seconds, together_seconds,
                       sum(texts(a[1]) == texts(b[1]) for a, b in zip(solo, together))))
    rows = {rows: count for rows, count in sorted(scheduler.rows_per_step.items())}
    one_after_another_s = statistics.median(solo_seconds for solo_seconds, _, _ in rounds)
    at_once_s = statistics.median(together_seconds for _, together_seconds, _ in rounds)
    ratios = [together_seconds / solo_seconds for solo_seconds, together_seconds, _ in rounds]
    identical = min(same for _, _, same in rounds)

    short_alone, _ = post(url, short)
    results: dict[str, float] = {}

    def long_request() -> None:
        results["long"] = post(url, long)[0]

    long_thread = threading.Thread(target=long_request, daemon=True)
    long_started = time.perf_counter()
    long_thread.start()
    time.sleep(1.0)
    short_beside_long, short_body = post(url, short)
    long_thread.join(timeout=arguments.long_wait)
    long_cell = f"{results['long']:.1f}" if "long" in results else \
        f"still running after {time.perf_counter() - long_started:.0f}"
    server.close()

    durations = [len(samples) / SAMPLE_RATE for samples in clips]
    lines = [
        f"{platform.system()} {platform.release()}; {os.cpu_count()} logical CPUs, torch uses "
        f"{torch.get_num_threads()} threads; torch {torch.__version__}; Whisper base, float32, greedy, language ja; "
        f"[server] max_concurrent_jobs {CLIPS}, max_batch_rows {scheduler.max_batch_rows} "
        f"(encoder: {scheduler.encoder_rows} piece a call)",
        "",
        "| what | wall s (median) | ratio (median of rounds) | rounds' ratios | transcripts as solo (every round) |",
        "| --- | --- | --- | --- | --- |",
        f"| {CLIPS} clips ({min(durations):.1f} to {max(durations):.1f} s) one after another | {one_after_another_s:.1f} "
        f"| 1.00 | | |",
        f"| the same {CLIPS} at once | {at_once_s:.1f} | {statistics.median(ratios):.2f} | "
        f"{', '.join(f'{ratio:.2f}' for ratio in ratios)} | {identical}/{CLIPS} |",
        "",
        f"Decoding steps of the concurrent runs by jobs sharing them: {dict(sorted(shared.items()))}; "
        f"all steps by rows: {rows}",
        "",
        "| what | 10 s clip's latency s | ratio to alone | long file s |",
        "| --- | --- | --- | --- |",
        f"| 10 s clip alone | {short_alone:.1f} | 1.00 | |",
        f"| 10 s clip sent 1 s after a {arguments.long_minutes:g}-minute file | {short_beside_long:.1f} | "
        f"{short_beside_long / short_alone:.2f} | {long_cell} |",
    ]
    write_report("\n".join(lines), arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
