"""One small writer per response_format, all fed by the same Transcript: the whole body, or
(stream=true) the server-sent events of OpenAI's transcription stream as segments become final.

`writer(response_format)` is the one way in (a registry, like openai/whisper's `get_writer`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .languages import language_name
from .transcript import Segment, TokenLogprob, Transcript


def format_timestamp(seconds: float, decimal_marker: str, always_include_hours: bool = True) -> str:
    milliseconds = max(0, round(seconds * 1000.0))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours else ""
    return f"{hours_marker}{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"


def to_json(transcript: Transcript) -> dict[str, Any]:
    body: dict[str, Any] = {"text": transcript.text}
    if transcript.logprobs is not None:
        body["logprobs"] = logprobs_body(transcript.logprobs)
    return body


def logprobs_body(logprobs: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [{"token": entry.token, "logprob": entry.logprob, "bytes": entry.bytes} for entry in logprobs]


def usage_body(duration: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(duration)}


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
        body["words"] = words_body(transcript.words)
    body["usage"] = usage_body(transcript.duration)
    return body


def words_body(words) -> list[dict[str, Any]]:
    return [{"word": word.word, "start": round(word.start, 2), "end": round(word.end, 2)} for word in words]


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
    return "".join(_srt_cue(number, segment) for number, segment in enumerate(_cues(transcript.segments), start=1))


def to_vtt(transcript: Transcript) -> str:
    return VTT_HEADER + "".join(_vtt_cue(segment) for segment in _cues(transcript.segments))


VTT_HEADER = "WEBVTT\n\n"


def _srt_cue(number: int, segment: Segment) -> str:
    """One cue and the blank line after it: a file is its cues one after another."""
    start = format_timestamp(segment.start, ",")
    end = format_timestamp(segment.end, ",")
    speaker = f"{segment.speaker}: " if segment.speaker else ""
    return f"{number}\n{start} --> {end}\n{speaker}{_one_line(segment.text)}\n\n"


def _vtt_cue(segment: Segment) -> str:
    start = format_timestamp(segment.start, ".")
    end = format_timestamp(segment.end, ".")
    return f"{start} --> {end}\n{_voice_tag(segment.speaker)}{_vtt_cue_text(segment.text)}\n\n"


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


def _cues(segments: list[Segment]) -> list[Segment]:
    """Subtitle cues: segments with text, each lasting at least a millisecond."""
    return [segment for segment in segments if segment.text.strip() and segment.end > segment.start]


@dataclass(frozen=True)
class OutputOptions:
    """What a request asked to see beyond its format's defaults."""

    include_segments: bool = True  # verbose_json: False when only word granularity was asked
    include_words: bool = False  # timestamp_granularities[]=word: segment events carry words
    include_logprobs: bool = False  # include[]=logprobs (json)


@dataclass(frozen=True)
class Body:
    text: str
    content_type: str


JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


def json_text(value: Any) -> str:
    """JSON as the app answers it: readable Japanese, keys in order, compact, one line."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def server_sent_event(event: dict[str, Any]) -> bytes:
    return f"data: {json_text(event)}\n\n".encode("utf-8")


HEARTBEAT = b": keep-alive\n\n"  # an SSE comment: clients skip it, proxies and Waitress see traffic


def error_event(envelope: dict[str, Any]) -> dict[str, Any]:
    """Azure's {"error": {...}} envelope as a stream event (the SDKs raise it as an APIError)."""
    return {"type": "error", **envelope}


class EventWriter:
    """One stream's events: `delta` events with the text of each segment as it becomes final,
    then one `done` event with the whole text (the non-streamed answer's) and the usage."""

    def __init__(self, options: OutputOptions) -> None:
        self.options = options
        self.started = False  # the first delta's leading space is dropped, as the whole text's

    def opening(self) -> list[dict[str, Any]]:
        return []

    def segments(self, segments: list[Segment]) -> list[dict[str, Any]]:
        events = []
        for segment in segments:
            delta = self.delta_text(segment)
            if delta:
                event: dict[str, Any] = {"type": "transcript.text.delta", "delta": delta}
                if self.options.include_logprobs and segment.logprobs is not None:
                    event["logprobs"] = logprobs_body(segment.logprobs)
                events.append(event)
        return events

    def delta_text(self, segment: Segment) -> str:
        text = segment.text if self.started else segment.text.lstrip()
        self.started = self.started or bool(text)
        return text

    def finish(self, transcript: Transcript) -> list[dict[str, Any]]:
        """The events once the job is done: `transcript.text.done`."""
        return [self.done(transcript)]

    def done(self, transcript: Transcript) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "transcript.text.done", "text": self.whole_text(transcript)}
        if self.options.include_logprobs and transcript.logprobs is not None:
            event["logprobs"] = logprobs_body(transcript.logprobs)
        event["usage"] = usage_body(transcript.duration)
        return event

    def whole_text(self, transcript: Transcript) -> str:
        return transcript.text


class SegmentEventWriter(EventWriter):
    """verbose_json: each segment's delta followed by its `transcript.text.segment` event."""

    def segments(self, segments: list[Segment]) -> list[dict[str, Any]]:
        events = []
        for segment in segments:
            events += super().segments([segment])
            event: dict[str, Any] = {
                "type": "transcript.text.segment", "id": f"seg_{segment.id}", "start": round(segment.start, 2),
                "end": round(segment.end, 2), "text": segment.text,
            }
            if self.options.include_words:
                event["words"] = words_body(segment.words)
            if segment.speaker is not None:
                event["speaker"] = segment.speaker
            events.append(event)
        return events


class DiarizedEventWriter(EventWriter):
    """diarized_json: the text as it is decoded, then, once speakers are known (diarization runs
    after the transcription), a `transcript.text.segment` event with its speaker per segment, as
    the body's segments, before `done`."""

    def finish(self, transcript: Transcript) -> list[dict[str, Any]]:
        return [*to_diarized_json(transcript)["segments"], self.done(transcript)]


class SubtitleEventWriter(EventWriter):
    """srt and vtt: each delta is whole cues, and the deltas add up to the file `done` carries."""

    def __init__(self, options: OutputOptions, header: str, cue: Callable[[int, Segment], str],
                 document: Callable[[Transcript], str]) -> None:
        super().__init__(options)
        self.header = header
        self.cue = cue
        self.document = document
        self.cues_sent = 0

    def opening(self) -> list[dict[str, Any]]:
        return [{"type": "transcript.text.delta", "delta": self.header}] if self.header else []

    def segments(self, segments: list[Segment]) -> list[dict[str, Any]]:
        cues = []
        for segment in _cues(segments):
            self.cues_sent += 1
            cues.append(self.cue(self.cues_sent, segment))
        return [{"type": "transcript.text.delta", "delta": "".join(cues)}] if cues else []

    def whole_text(self, transcript: Transcript) -> str:
        return self.document(transcript)


@dataclass(frozen=True)
class Writer:
    """One response_format: its body (`render`) and its stream (`events`)."""

    render_body: Callable[[Transcript, OutputOptions], Body]
    events: Callable[[OutputOptions], EventWriter]

    def render(self, transcript: Transcript, options: OutputOptions = OutputOptions()) -> Body:
        return self.render_body(transcript, options)


def _json_body(transcript: Transcript, options: OutputOptions) -> Body:
    return Body(json_text(to_json(transcript)) + "\n", JSON_CONTENT_TYPE)


def _verbose_json_body(transcript: Transcript, options: OutputOptions) -> Body:
    return Body(json_text(to_verbose_json(transcript, include_segments=options.include_segments)) + "\n",
                JSON_CONTENT_TYPE)


def _text_body(render: Callable[[Transcript], str]) -> Callable[[Transcript, OutputOptions], Body]:
    return lambda transcript, options: Body(render(transcript), TEXT_CONTENT_TYPE)


WRITERS: dict[str, Writer] = {
    "json": Writer(_json_body, EventWriter),
    "verbose_json": Writer(_verbose_json_body, SegmentEventWriter),
    "text": Writer(_text_body(to_text), EventWriter),
    "srt": Writer(_text_body(to_srt), lambda options: SubtitleEventWriter(options, "", _srt_cue, to_srt)),
    "vtt": Writer(_text_body(to_vtt), lambda options: SubtitleEventWriter(
        options, VTT_HEADER, lambda number, segment: _vtt_cue(segment), to_vtt)),
    "diarized_json": Writer(lambda transcript, options: Body(json_text(to_diarized_json(transcript)) + "\n",
                                                             JSON_CONTENT_TYPE), DiarizedEventWriter),
}
RESPONSE_FORMATS = tuple(WRITERS)


def writer(response_format: str) -> Writer:
    return WRITERS[response_format]
