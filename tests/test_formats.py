"""Each response_format writer lays the same Transcript out as the hosted service does."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import srt
import webvtt

from whisper_api.formats import (
    OutputOptions, format_timestamp, to_json, to_srt, to_text, to_verbose_json, to_vtt, writer,
)
from whisper_api.transcript import Segment, Transcript


def segment(number: int, start: float, end: float, text: str) -> Segment:
    return Segment(number, 0, start, end, text, [50364, 1, 50414], 0.0, -0.2, 1.1, 0.01)


TRANSCRIPT = Transcript(
    task="transcribe",
    language="ja",
    duration=3725.456,
    text="こんにちは。元気です。",
    segments=[segment(0, 0.0, 1.5, "こんにちは。"), segment(1, 3723.25, 3725.4, "元気です。")],
)


def test_timestamps_carry_hours_and_the_right_marker():
    assert format_timestamp(3723.25, ",") == "01:02:03,250"
    assert format_timestamp(0.0015, ".") == "00:00:00.002"
    assert format_timestamp(59.9996, ".") == "00:01:00.000"


def test_json_is_text_only():
    assert to_json(TRANSCRIPT) == {"text": "こんにちは。元気です。"}


def test_verbose_json_names_the_language_and_counts_usage():
    body = to_verbose_json(TRANSCRIPT)
    assert body["language"] == "japanese"
    assert body["duration"] == 3725.46
    assert body["usage"] == {"type": "duration", "seconds": 3726}
    assert [item["id"] for item in body["segments"]] == [0, 1]
    assert "words" not in body


def test_text_ends_with_a_newline():
    assert to_text(TRANSCRIPT) == "こんにちは。元気です。\n"


def test_srt_parses_back_with_the_same_cues():
    cues = list(srt.parse(to_srt(TRANSCRIPT)))
    assert [cue.content for cue in cues] == ["こんにちは。", "元気です。"]
    assert cues[1].start.total_seconds() == 3723.25


def test_vtt_parses_back_with_the_same_cues():
    captions = webvtt.from_buffer(io.StringIO(to_vtt(TRANSCRIPT)))
    assert [caption.text for caption in captions] == ["こんにちは。", "元気です。"]
    assert captions[1].start == "01:02:03.250"


def test_empty_transcript_gives_valid_empty_subtitles():
    empty = Transcript("transcribe", "en", 1.0, "", [])
    assert to_srt(empty) == ""
    assert to_vtt(empty) == "WEBVTT\n\n"


def test_vtt_cue_text_cannot_end_the_cue_or_open_a_tag():
    tricky = Transcript("transcribe", "en", 2.0, "", [segment(0, 0.0, 2.0, "a --> b <i> & c\n\nd")])
    captions = webvtt.from_buffer(io.StringIO(to_vtt(tricky)))
    assert len(captions) == 1
    assert captions[0].raw_text == "a -> b &lt;i> &amp; c d"


def test_srt_cue_text_stays_on_one_line():
    broken = Transcript("transcribe", "en", 2.0, "", [segment(0, 0.0, 2.0, "one\n\ntwo")])
    assert [cue.content for cue in srt.parse(to_srt(broken))] == ["one two"]


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt", "verbose_json", "diarized_json"])
def test_streamed_events_add_up_to_the_whole_answer(response_format):
    """Deltas as segments become final, then `done` with the text the body carries (the subtitle
    formats' deltas are whole cues, so they add up to the file)."""
    labelled = replace(TRANSCRIPT, segments=[replace(segment, speaker="AB"[index])
                                             for index, segment in enumerate(TRANSCRIPT.segments)])
    events = writer(response_format).events(OutputOptions())
    streamed = events.opening() + [event for segment in labelled.segments for event in events.segments([segment])]
    streamed += events.finish(labelled)
    deltas = "".join(event["delta"] for event in streamed if event["type"] == "transcript.text.delta")
    done = streamed[-1]
    assert done["type"] == "transcript.text.done" and done["usage"] == {"type": "duration", "seconds": 3726}
    body = writer(response_format).render(labelled).text
    if response_format in ("srt", "vtt"):
        assert deltas == done["text"] == body
    else:
        assert deltas.strip() == done["text"] == labelled.text
    segment_events = [event for event in streamed if event["type"] == "transcript.text.segment"]
    if response_format == "diarized_json":
        assert [(event["id"], event["speaker"]) for event in segment_events] == [("seg_0", "A"), ("seg_1", "B")]
        assert streamed.index(segment_events[0]) > max(
            index for index, event in enumerate(streamed) if event["type"] == "transcript.text.delta")
    elif response_format == "verbose_json":
        assert [event["speaker"] for event in segment_events] == ["A", "B"]
    else:
        assert segment_events == []
