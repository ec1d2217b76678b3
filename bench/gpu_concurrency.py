"""GPU: many short requests through the engine at once against the same requests one at a time.

The engine as the server runs it (its scheduler, `max_batch_rows` rows a step, up to
`max_concurrent_jobs` jobs sharing them) over a random-weight large-v3-turbo (bench.gpu_compare's
model: nothing downloaded), with exactly `--tokens` tokens forced per chunk, so that both ways do
the same work. Each request is `--seconds` of synthetic audio that a speech detector hearing
speech everywhere makes one chunk. Throughput is requests per second; the ratio is the
concurrent throughput over the one-at-a-time throughput, in the same run.

    python -m bench.gpu_concurrency --config-dir DIR [--requests 24] [--seconds 10] [--tokens 128]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.report import write_report  # noqa: E402
from bench.gpu_compare import EverythingIsSpeech, build_pipeline, device_name, synthetic_audio
from whisper_api.config import ModelSettings
from whisper_api.devices import DeviceChoice
from whisper_api.engine import Engine
from whisper_api.inference.fallback import QualityOptions
from whisper_api.inference.model import TORCH_DTYPES, LoadedModel
from whisper_api.transcript import TranscriptionJob


def build_engine(arguments: argparse.Namespace) -> Engine:
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    dtype = "float16" if device.type == "cuda" else "float32"  # the CPU run is a smoke test only
    asr = build_pipeline(arguments.size, arguments.config_dir, device, TORCH_DTYPES[dtype])
    model = LoadedModel(f"random-{arguments.size}", asr.model, asr.tokenizer, asr.feature_extractor, device,
                        TORCH_DTYPES[dtype])
    choice = DeviceChoice(device.type, device, device_name(), "benchmark")
    settings = ModelSettings(name=model.name, device=device.type, dtype=dtype, warmup=False)
    engine = Engine(settings, choice, model, 0.0, max_queue=arguments.requests, detector=EverythingIsSpeech(),
                    max_concurrent_jobs=arguments.requests, max_batch_rows=arguments.rows)
    # a random model is never sure of itself: no fallback, no silence, exactly `tokens` per chunk
    fallback = engine.long_form.clip.fallback
    fallback.options = replace(QualityOptions(), logprob_threshold=float("-inf"),
                               compression_ratio_threshold=float("inf"), no_speech_threshold=1.0,
                               forced_new_tokens=arguments.tokens)
    engine.long_form.cover_speech = False  # no resumes: the same work both ways
    return engine


def one_at_a_time(engine: Engine, clips, texts: dict[int, str] | None = None) -> float:
    started = time.perf_counter()
    for index, samples in enumerate(clips):
        transcript = engine.transcribe(TranscriptionJob(samples=samples, language="ja"))
        if texts is not None:
            texts[index] = transcript.text
    synchronize()
    return time.perf_counter() - started


def all_at_once(engine: Engine, clips, texts: dict[int, str] | None = None) -> float:
    errors: list[BaseException] = []

    def run(index: int, samples) -> None:
        try:
            transcript = engine.transcribe(TranscriptionJob(samples=samples, language="ja"))
            if texts is not None:
                texts[index] = transcript.text
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index, samples)) for index, samples in enumerate(clips)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    synchronize()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", type=Path, required=True)
    parser.add_argument("--size", default="large-v3-turbo")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rows", type=int, default=24, help="[server] max_batch_rows")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench/results/gpu_concurrency.md"))
    arguments = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    engine = build_engine(arguments)
    clips = [synthetic_audio(arguments.seconds / 60, seed=seed) for seed in range(arguments.requests)]
    with torch.no_grad():
        one_at_a_time(engine, clips[:2])  # warm-up
        all_at_once(engine, clips[:4])
    scheduler = engine.scheduler
    serial, concurrent = [], []
    solo_texts: dict[int, str] = {}
    shared_texts: dict[int, str] = {}
    for _ in range(arguments.repeats):
        serial.append(one_at_a_time(engine, clips, solo_texts))
        steps_before = dict(scheduler.rows_per_step)
        concurrent.append(all_at_once(engine, clips, shared_texts))
    identical = sum(solo_texts[index] == shared_texts.get(index) for index in solo_texts)
    rows = {rows: count - steps_before.get(rows, 0) for rows, count in sorted(scheduler.rows_per_step.items())
            if count - steps_before.get(rows, 0)}
    serial_median, concurrent_median = statistics.median(serial), statistics.median(concurrent)
    requests = arguments.requests
    lines = [
        f"GPU: {device_name()}; torch {torch.__version__}; transformers {__import__('transformers').__version__}; "
        f"Python {platform.python_version()}",
        f"random-weight {arguments.size}, float16, sdpa; {requests} requests of {arguments.seconds:g} s, one chunk "
        f"each, {arguments.tokens} tokens forced; [server] max_batch_rows {arguments.rows}, max_concurrent_jobs "
        f"{requests}; median of {arguments.repeats} after a warm-up",
        "",
        "| way | median s | runs s | requests/s | throughput ratio |",
        "| --- | --- | --- | --- | --- |",
        f"| one at a time | {serial_median:.2f} | {', '.join(f'{s:.2f}' for s in serial)} | "
        f"{requests / serial_median:.1f} | 1.00 |",
        f"| all at once | {concurrent_median:.2f} | {', '.join(f'{s:.2f}' for s in concurrent)} | "
        f"{requests / concurrent_median:.1f} | {serial_median / concurrent_median:.2f} |",
        "",
        f"Decoding steps of the last concurrent run by rows in them: {rows}",
        f"Transcripts identical all at once and one at a time: {identical}/{len(solo_texts)}",
    ]
    write_report("\n".join(lines), arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
