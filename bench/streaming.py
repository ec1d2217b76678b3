"""Time to first text with stream=true: a long clip streamed through Waitress, the moment each
delta arrives, against the whole answer's time (and the same clip without streaming, in turns).

    python -m bench.streaming [--model DIR] [--minutes 10] [--batch-size 8] [--repeats 2] [--cost-pairs 2]
                              [--cost-only] [--output FILE]

The first delta comes after the first batch of chunks is decoded (voice activity detection and
a first batch of one chunk), not at the end: the figure is first delta / total. The engine alone,
with and without that small first batch, says what it costs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never fetch weights while measuring
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import requests  # noqa: E402

from bench.audio import long_clip, wav_bytes  # noqa: E402
from bench.report import write_report  # noqa: E402
from bench.run import machine_description  # noqa: E402
from tests.support.speech import SAMPLE_RATE  # noqa: E402
from whisper_api import create_app  # noqa: E402
from whisper_api.config import DeploymentSettings, ModelSettings, ServerSettings, Settings  # noqa: E402
from whisper_api.engine import Engine  # noqa: E402
from whisper_api.inference.long_form import VadStrategy  # noqa: E402
from whisper_api.server import create_server  # noqa: E402
from whisper_api.transcript import TranscriptionJob  # noqa: E402
from whisper_api.memory import settle_after_start_up  # noqa: E402

LANGUAGE = "ja"


def streamed(url: str, audio: bytes) -> tuple[float, float, list[float], str]:
    """(first delta, total, every delta's arrival, done text) in seconds from the request's start."""
    started = time.perf_counter()
    response = requests.post(url, headers={"api-key": "bench"}, files={"file": ("long.wav", audio)},
                             data={"language": LANGUAGE, "stream": "true"}, stream=True, timeout=7200)
    response.raise_for_status()
    arrivals: list[float] = []
    text = ""
    for line in response.iter_lines():
        if not line.startswith(b"data: "):
            continue
        event = json.loads(line[len(b"data: "):])
        if event["type"] == "transcript.text.delta":
            arrivals.append(time.perf_counter() - started)
        elif event["type"] == "transcript.text.done":
            text = event["text"]
        elif event["type"] == "error":
            raise SystemExit(f"the stream failed: {event['error']}")
    total = time.perf_counter() - started
    return arrivals[0] if arrivals else total, total, arrivals, text


def plain(url: str, audio: bytes) -> tuple[float, str]:
    started = time.perf_counter()
    response = requests.post(url, headers={"api-key": "bench"}, files={"file": ("long.wav", audio)},
                             data={"language": LANGUAGE}, timeout=7200)
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["text"]


def engine_seconds(engine: Engine, samples, first_batch_chunks: int) -> tuple[float, float]:
    """The engine's (wall, this process' CPU) seconds on the clip, streamed (a job nobody
    streams has no small first batch), with a first batch of `first_batch_chunks` chunks. CPU
    seconds hardly move when other work shares the machine."""
    default = engine.long_form
    engine.long_form = VadStrategy(default.clip, engine.settings.batch_size, first_batch_chunks=first_batch_chunks)
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        engine.transcribe(TranscriptionJob(samples=samples, language=LANGUAGE, on_segments=lambda segments: None))
        return time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        engine.long_form = default


def first_batch_cost(engine: Engine, samples, batch_size: int, pairs: int) -> str:
    """A table row: the small first batch against a whole one, runs in turns."""
    small, whole = [], []
    for _ in range(pairs):
        small.append(engine_seconds(engine, samples, engine.long_form.first_batch_chunks))
        whole.append(engine_seconds(engine, samples, batch_size))
        print(f"engine: small first batch {small[-1][0]:.2f} s ({small[-1][1]:.2f} s CPU), whole first batch "
              f"{whole[-1][0]:.2f} s ({whole[-1][1]:.2f} s CPU)", flush=True)
    wall = statistics.median(s[0] for s in small) / statistics.median(w[0] for w in whole)
    cpu = statistics.median(s[1] for s in small) / statistics.median(w[1] for w in whole)
    return (f"| engine alone, first batch of {engine.long_form.first_batch_chunks} chunk against one of {batch_size}, "
            f"medians of {pairs} in turns (the cost of the early first text) | wall {wall:.3f}, process CPU time "
            f"{cpu:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="transformers checkpoint (default: the tests' Whisper base)")
    parser.add_argument("--device", default="auto", choices=("auto", "directml", "cuda", "cpu"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cost-pairs", type=int, default=2, help="engine runs with and without the small first batch")
    parser.add_argument("--cost-only", action="store_true", help="only the engine's cost of the small first batch")
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args(argv)
    if arguments.model is None:
        from tests.support.whisper_checkpoint import ensure_whisper_base

        arguments.model = str(ensure_whisper_base())
    settings = ModelSettings(name=arguments.model, device=arguments.device, dtype=arguments.dtype,
                             batch_size=arguments.batch_size, warmup=True)
    samples, _, _ = long_clip(arguments.minutes)
    audio = wav_bytes(samples)
    engine = Engine.load(settings)
    settle_after_start_up()  # as the server does once its model is loaded
    if arguments.cost_only:
        row = first_batch_cost(engine, samples, arguments.batch_size, arguments.cost_pairs)
        write_report("\n".join([machine_description(engine), f"clip: {len(samples) / SAMPLE_RATE / 60:.1f} min",
                                 "", "| measurement | value |", "| --- | --- |", row]), arguments.output, "streaming")
        return 0
    app_settings = Settings(server=ServerSettings(max_upload_mb=len(audio) / 2**20 + 1), model=settings,
                            deployments={"whisper": DeploymentSettings("whisper")}, source="bench")
    server = create_server(create_app(app_settings, engine=engine), app_settings.server, host="127.0.0.1", port=0)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01"
    runs, plain_runs, identical = [], [], []
    for _ in range(arguments.repeats):  # streamed and plain in turns: a busy spell hits both
        first, total, arrivals, text = streamed(url, audio)
        plain_seconds, plain_text = plain(url, audio)
        runs.append((first, total, len(arrivals)))
        plain_runs.append(plain_seconds)
        identical.append(text == plain_text)
        print(f"first delta {first:.2f} s, total {total:.2f} s ({first / total:.3f}), {len(arrivals)} deltas; "
              f"without streaming {plain_seconds:.2f} s", flush=True)
    server.close()
    cost_row = first_batch_cost(engine, samples, arguments.batch_size, arguments.cost_pairs)
    duration = len(samples) / SAMPLE_RATE
    ratios = [first / total for first, total, _ in runs]
    rows = [
        "| measurement | value |",
        "| --- | --- |",
        f"| clip | {duration / 60:.1f} min of Japanese sentences (and JFK's clip every two minutes), WAV upload |",
        f"| time to first delta, median of {len(runs)} | {statistics.median(first for first, _, _ in runs):.2f} s |",
        f"| whole stream (`transcript.text.done`), median | {statistics.median(total for _, total, _ in runs):.2f} s |",
        f"| first delta / total, each run | {', '.join(f'{ratio:.3f}' for ratio in ratios)} |",
        f"| deltas per stream | {', '.join(str(count) for _, _, count in runs)} |",
        f"| the same clip without streaming, median | {statistics.median(plain_runs):.2f} s; streamed / plain = "
        f"{statistics.median(total for _, total, _ in runs) / statistics.median(plain_runs):.3f} |",
        f"| done text identical to the plain answer | {all(identical)} |",
        cost_row,
    ]
    lines = [f"whisper-api streaming benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}",
             machine_description(engine), "", *rows]
    write_report("\n".join(lines), arguments.output, "streaming")
    return 0


if __name__ == "__main__":
    sys.exit(main())
