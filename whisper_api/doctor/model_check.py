"""The model check: load the model as the server does, transcribe the shipped Japanese clip a few
times, and score what it heard (character error rate) and how fast (median real-time factor)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

from ..config import Settings
from ..text_metrics import character_error_rate
from .report import Report

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
CLIP_PATH = ASSETS_DIR / "doctor_ja.ogg"
CLIP_TEXT_PATH = ASSETS_DIR / "doctor_ja.txt"
CLIP_LANGUAGE = "ja"
# An English-only model (tiny.en ... medium.en) hears the English clip instead.
ENGLISH_CLIP_PATH = ASSETS_DIR / "en_jfk.mp3"
ENGLISH_CLIP_TEXT_PATH = ASSETS_DIR / "en_jfk.txt"

# Character error rates on the shipped clip: at or below GOOD the model heard it well; above
# NONSENSE the transcript has little in common with the speech, which a working device and any
# multilingual Whisper model never produce on this clean sentence (Whisper base: about 0.1).
GOOD_CHARACTER_ERROR_RATE = 0.2
NONSENSE_CHARACTER_ERROR_RATE = 0.5
TIMED_RUNS = 3  # after one untimed run that pays the device's one-time start-up
clock = time.perf_counter  # times the transcriptions (a name of its own, so tests can set the pace)


def report_model_load(report: Report, settings: Settings):
    """Load the model the way the server does; None when it fails."""
    from ..engine import Engine

    report.section("Model")
    report.item("model", settings.model.name)
    report.item("settings", f"dtype = {settings.model.dtype}, attention = {settings.model.attention}")
    report.write("  loading (the first time, a Hugging Face model id is downloaded into the Hugging Face cache) ...")
    started = time.perf_counter()
    try:
        engine = Engine.load(dataclasses.replace(settings.model, warmup=False), settings.server.max_queue)
    except Exception as error:
        message = f"{type(error).__name__}: {error}".splitlines()[0][:400]
        report.problem(f"the model did not load: {message}", _load_advice(message, settings))
        return None
    info = engine.info
    report.ok(f"loaded on {info.device} in {time.perf_counter() - started:.1f} s ({info.dtype}, {info.attention} attention)")
    return engine


def _load_advice(message: str, settings: Settings) -> str:
    lowered = message.lower()
    if "memory" in lowered or "e_outofmemory" in lowered or "887a0005" in lowered:
        return "choose a smaller model or dtype = float16 (README: model choice for the 780M), close other GPU apps"
    if "offline" in lowered or "connection" in lowered or "not found" in lowered or "does not appear" in lowered:
        return (f"download it once while online: setup.ps1 -Model {settings.model.name}, "
                "or set [model] name to a local folder with a transformers Whisper checkpoint")
    return "check [model] name (a Hugging Face id such as openai/whisper-large-v3-turbo, or a local folder)"


def report_transcription(report: Report, engine) -> None:
    from ..audio import decode
    from ..languages import UnsupportedLanguage
    from ..transcript import TranscriptionJob

    report.section("Transcription")
    english_only = engine.info.english_only
    clip, text_path, language, spoken = ((ENGLISH_CLIP_PATH, ENGLISH_CLIP_TEXT_PATH, "en", "English") if english_only
                                         else (CLIP_PATH, CLIP_TEXT_PATH, CLIP_LANGUAGE, "Japanese"))
    expected = text_path.read_text(encoding="utf-8").strip()
    audio = decode(clip.read_bytes())
    device = engine.info.device
    if english_only:
        report.item("model", "English-only: no other language, no translation")
    report.item("clip", f"{audio.duration:.1f} s of {spoken} speech shipped with whisper-api ({clip.name})")
    report.item("expected", expected)
    job = TranscriptionJob(samples=audio.samples, language=language)
    timings = []
    try:
        for _ in range(1 + TIMED_RUNS):
            started = clock()
            text = engine.transcribe(job).text
            timings.append(clock() - started)
    except UnsupportedLanguage:
        report.warn("this model has no Japanese (an English-only model?): the clip was not transcribed")
        return
    except Exception as error:
        report.problem(
            f"transcription failed on {device}: {type(error).__name__}: {error}".splitlines()[0][:400],
            "run with --debug for the traceback; try [model] attention = eager and dtype = float32, or device = cpu",
        )
        return
    report.item("heard", text or "(nothing)")
    error_rate = character_error_rate(expected, text)
    timed = [seconds / audio.duration for seconds in timings[1:]]
    real_time_factor = statistics.median(timed)
    report.item("first run", f"{timings[0]:.2f} s (includes one-time start-up on the device)")
    report.item("speed", f"real-time factor {real_time_factor:.2f}, median of {len(timed)} runs "
                f"(spread {min(timed):.2f} to {max(timed):.2f}; "
                f"{'faster' if real_time_factor < 1 else 'slower'} than real time)")
    report.item("errors", f"character error rate {error_rate:.0%}")
    if error_rate > NONSENSE_CHARACTER_ERROR_RATE:
        report.problem(
            f"the transcript has little in common with the speech (character error rate {error_rate:.0%})",
            "the device computes wrong results: set [model] dtype = float32 and attention = eager, "
            "update the graphics driver, or set device = cpu" if device != "cpu" else
            "check [model] name: a multilingual Whisper model hears this clip almost perfectly",
        )
    elif error_rate > GOOD_CHARACTER_ERROR_RATE:
        report.warn(
            f"the clip was heard poorly (character error rate {error_rate:.0%})",
            "small models are weak in Japanese: try openai/whisper-large-v3-turbo or kotoba-tech/kotoba-whisper-v2.0",
        )
    else:
        report.ok("the clip was transcribed correctly")
    if real_time_factor > 1:
        if device == "cpu":
            advice = ("use the GPU (device = auto with torch-directml on Windows, see the Device section) "
                      "or a smaller model (README: model choice for the 780M)")
        else:
            advice = "choose a smaller model (README: model choice for the 780M), or check the CPU fallbacks below"
        report.warn(
            f"slower than real time: a 10-minute recording would take about {10 * real_time_factor:.0f} minutes", advice
        )
