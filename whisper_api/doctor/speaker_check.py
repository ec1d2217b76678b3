"""The speaker-model check: the CAM++ weights found, their SHA-256, loaded, and labelling speed.

A missing speaker model is a warning, not a problem: the server transcribes without it and only
answers diarized_json (and speaker srt/vtt) with a 503 that says how to install it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..config import Settings
from .model_check import CLIP_PATH
from .report import Report

REPEATS = 4  # the shipped 4.5 s clip four times over: 18 s of one voice, a few CPU seconds


def report_speaker_model(report: Report, settings: Settings) -> None:
    from ..audio import decode
    from ..diarization import Diarizer, SpeakerModelUnavailable
    from ..diarization.weights import DOWNLOAD_COMMAND, WEIGHTS_SHA256, default_weights_path

    report.section("Speaker model (diarized_json)")
    configured = settings.diarization.weights
    path = Path(configured).expanduser() if configured else default_weights_path()
    report.item("file", str(path))
    if not path.is_file():
        report.warn("not found: diarized_json and speaker subtitles answer 503 until it is installed",
                    f"run `{DOWNLOAD_COMMAND}` once while online")
        return
    started = time.perf_counter()
    try:
        diarizer = Diarizer(path, settings.diarization.max_speakers)
    except SpeakerModelUnavailable as error:
        report.problem(str(error), f"delete the file and run `{DOWNLOAD_COMMAND}`")
        return
    except Exception as error:  # a corrupt file that still hashes right cannot happen; a torch problem can
        report.problem(f"the speaker model did not load: {type(error).__name__}: {error}".splitlines()[0][:400])
        return
    report.ok(f"SHA-256 {WEIGHTS_SHA256} (as pinned); loaded in {time.perf_counter() - started:.2f} s")
    samples = np.tile(decode(CLIP_PATH.read_bytes()).samples, REPEATS)
    started = time.perf_counter()
    diarization = diarizer.diarize(samples)
    seconds = time.perf_counter() - started
    minutes = len(samples) / 16000 / 60
    speakers = len(set(diarization.names.values()))
    report.item("speed", f"{seconds / minutes:.1f} s of CPU time per minute of audio ({seconds:.2f} s for {minutes * 60:.0f} s)")
    if speakers == 1:
        report.ok("one speaker found in the one-voice clip")
    else:
        report.warn(f"{speakers} speakers found in a clip with one voice", "report it with this output")
