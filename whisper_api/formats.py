"""One small writer per response_format, all fed by the same Transcript."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from .languages import language_name
from .transcript import Segment, Transcript


def format_timestamp(seconds: float, decimal_marker: str, always_include_hours: bool = True) -> str:
    milliseconds = max(0, round(seconds * 1000.0))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours else ""
    return f"{hours_marker}{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"


def to_json(transcript: Transcript) -> dict[str, Any]:
    return {"text": transcript.text}


def to_verbose_json(transcript: Transcript, include_segments: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": language_name(transcript.language),
        "duration": round(transcript.duration, 2),
        "text": transcript.text,
    }
    if include_segments:
        body["segments"] = [_segment_body(segment) for segment in transcript.segments]
    if transcript.words is not None:
        body["words"] = [
            {"word": word.word, "start": round(word.start, 2), "end": round(word.end, 2)} for word in transcript.words
        ]
    body["usage"] = {"type": "duration", "seconds": math.ceil(transcript.duration)}
    return body


def to_diarized_json(transcript: Transcript) -> dict[str, Any]:
    """openai-python's TranscriptionDiarized: segments with speakers A, B, ... (or known names)."""
    segments = [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{index}",
            "start": round(segment.start, 2),
            "end": round(segment.end, 2),
            "speaker": segment.speaker or "A",
            "text": segment.text.strip(),
        }
        for index, segment in enumerate(transcript.segments)
        if segment.text.strip()
    ]
    return {
        "task": "transcribe",
        "duration": round(transcript.duration, 2),
        "text": transcript.text,
        "segments": segments,
        "usage": {"type": "duration", "seconds": math.ceil(transcript.duration)},
    }


def _segment_body(segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "seek": segment.seek,
        "start": round(segment.start, 2),
        "end": round(segment.end, 2),
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }


def to_text(transcript: Transcript) -> str:
    return transcript.text + "\n"


def to_srt(transcript: Transcript) -> str:
    blocks = []
    for number, segment in enumerate(_cues(transcript), start=1):
        start = format_timestamp(segment.start, ",")
        end = format_timestamp(segment.end, ",")
        speaker = f"{segment.speaker}: " if segment.speaker else ""
        blocks.append(f"{number}\n{start} --> {end}\n{speaker}{_one_line(segment.text)}\n")
    return "\n".join(blocks) + ("\n" if blocks else "")


def to_vtt(transcript: Transcript) -> str:
    blocks = ["WEBVTT\n"]
    for segment in _cues(transcript):
        start = format_timestamp(segment.start, ".")
        end = format_timestamp(segment.end, ".")
        blocks.append(f"{start} --> {end}\n{_voice_tag(segment.speaker)}{_vtt_cue_text(segment.text)}\n")
    return "\n".join(blocks) + "\n"


def _one_line(text: str) -> str:
    """Cue text on one line: a blank line inside it would end the cue early."""
    return re.sub(r"[ \t]*[\r\n]+[ \t]*", " ", text).strip()


def _vtt_cue_text(text: str) -> str:
    """WebVTT cue text: "&" and "<" escaped as the format requires, and "-->" (which would read as
    a timing line) written "->" as openai/whisper's writer does."""
    text = _one_line(text).replace("&", "&amp;").replace("<", "&lt;")
    while "-->" in text:
        text = text.replace("-->", "->")
    return text


def _voice_tag(speaker: str | None) -> str:
    """WebVTT's voice span `<v A>`; the annotation may not hold ">" or a line break, and "&" is escaped."""
    if not speaker:
        return ""
    name = _one_line(speaker).replace("&", "&amp;").replace(">", "&gt;")
    return f"<v {name}>"


def _cues(transcript: Transcript) -> list[Segment]:
    """Subtitle cues: segments with text, each lasting at least a millisecond."""
    return [segment for segment in transcript.segments if segment.text.strip() and segment.end > segment.start]


TEXT_FORMATTERS: dict[str, Callable[[Transcript], str]] = {"text": to_text, "srt": to_srt, "vtt": to_vtt}
JSON_FORMATTERS: dict[str, Callable[[Transcript], dict[str, Any]]] = {
    "json": to_json,
    "verbose_json": to_verbose_json,
    "diarized_json": to_diarized_json,
}
