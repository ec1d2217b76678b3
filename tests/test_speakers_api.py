"""Who said what, through the API: diarized_json and known speakers with the openai SDK and
requests against a live server, speaker subtitles on a `diarize = true` deployment, and every
kind of bad known-speaker input answered 400 naming its field."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator

import numpy as np
import openai
import pytest
import requests
import srt
import webvtt

from tests.conftest import API_KEY, API_VERSION, make_settings
from tests.support import meetings
from tests.support.live_server import serve_in_thread
from tests.support.speech import encode
from whisper_api import create_app
from whisper_api.config import DeploymentSettings

TWO_VOICES = ("jf_alpha", "jm_kumo")
SCRIPT = [
    ("jf_alpha", meetings.LONG_SENTENCES[0]),
    ("jm_kumo", meetings.LONG_SENTENCES[1]),
    ("jf_alpha", meetings.SHORT_SENTENCES[1]),
    ("jm_kumo", meetings.LONG_SENTENCES[3]),
    ("jf_alpha", meetings.LONG_SENTENCES[4]),
]


@pytest.fixture(scope="module")
def meeting() -> meetings.Meeting:
    if not meetings.kokoro_available():
        pytest.skip(meetings.KOKORO_INSTALL_HINT)
    return meetings.build("two speakers", SCRIPT, seed=7)


@pytest.fixture(scope="module")
def server(model_settings, engine) -> Iterator[str]:
    settings = make_settings(model_settings)
    deployments = {**settings.deployments, "whisper-speakers": DeploymentSettings("whisper-speakers", language="ja", diarize=True)}
    app = create_app(settings.__class__(**{**settings.__dict__, "deployments": deployments}), engine=engine)
    with serve_in_thread(app) as url:
        yield url


def reference_clip(voice: str, *sentences: str) -> str:
    """A data URL of a WAV clip of `voice` saying sentences that are not in the meeting."""
    samples = np.concatenate([meetings.voice_speech(text, voice) for text in sentences])
    return "data:audio/wav;base64," + base64.b64encode(encode(samples, "wav")).decode()


def true_speaker(meeting: meetings.Meeting, start: float, end: float) -> str:
    overlap: dict[str, float] = {}
    for turn_start, turn_end, voice in meeting.turns:
        overlap[voice] = overlap.get(voice, 0.0) + max(0.0, min(end, turn_end) - max(start, turn_start))
    return max(overlap, key=overlap.get)


def assert_segments_follow_the_voices(meeting, segments, names: dict[str, str] | None = None) -> None:
    """Most segment time carries the right speaker, under the mapping `names` (voice -> label) or the best one."""
    labelled = [(segment.start, segment.end, segment.speaker) for segment in segments]
    assert meetings.speech_time_accuracy(meeting, labelled) >= 0.85
    if names:
        for start, end, speaker in labelled:
            if end - start > 1.0:
                assert speaker == names[true_speaker(meeting, start, end)]


def test_diarized_json_through_the_openai_sdk(server, meeting):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)
    result = client.audio.transcriptions.create(
        model="whisper", file=("meeting.wav", encode(meeting.samples, "wav")), response_format="diarized_json",
        language="ja", prompt="会議の記録です。",
    )
    assert isinstance(result, openai.types.audio.TranscriptionDiarized)
    assert result.task == "transcribe" and result.duration == pytest.approx(meeting.duration, abs=0.05)
    assert result.usage.type == "duration"
    assert all(segment.type == "transcript.text.segment" and segment.text for segment in result.segments)
    assert [segment.id for segment in result.segments] == [f"seg_{index}" for index in range(len(result.segments))]
    speakers = list(dict.fromkeys(segment.speaker for segment in result.segments))
    assert speakers == ["A", "B"]  # in order of first appearance
    assert_segments_follow_the_voices(meeting, result.segments, {"jf_alpha": "A", "jm_kumo": "B"})
    assert "".join(segment.text for segment in result.segments).replace(" ", "") == result.text.replace(" ", "")


def test_known_speakers_name_their_voices_through_requests(server, meeting, caplog):
    caplog.set_level(logging.INFO, logger="whisper_api.access")
    references = [
        reference_clip("jm_kumo", meetings.LONG_SENTENCES[8], meetings.LONG_SENTENCES[11]),
        reference_clip("jf_alpha", meetings.LONG_SENTENCES[6], meetings.SHORT_SENTENCES[2]),
    ]
    response = requests.post(
        f"{server}/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}",
        headers={"api-key": API_KEY, "x-request-id": "diarized-job-0001"},
        files={"file": ("meeting.flac", encode(meeting.samples, "flac"))},
        data={"response_format": "diarized_json", "language": "ja",
              "known_speaker_names[]": ["佐藤", "Alice"], "known_speaker_references[]": references},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    segments = [Segment(**segment) for segment in response.json()["segments"]]
    assert_segments_follow_the_voices(meeting, segments, {"jf_alpha": "Alice", "jm_kumo": "佐藤"})
    job = requests.get(f"{server}/v1/jobs/diarized-job-0001", headers={"api-key": API_KEY}, timeout=10).json()
    assert job["status"] == "succeeded" and job["stage"] == "diarizing" and job["diarization_seconds"] > 0
    metrics = requests.get(f"{server}/metrics", headers={"api-key": API_KEY}, timeout=10).text
    count = re.search(r'whisper_api_diarization_seconds_count\{deployment="whisper"\} (\S+)', metrics)
    assert count and float(count.group(1)) >= 1
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "whisper_api.access"]
    line = next(line for line in lines if line["request_id"] == "diarized-job-0001")
    assert line["diarization_seconds"] > 0 and line["speakers"] == 2


class Segment:
    def __init__(self, start: float, end: float, speaker: str, **_) -> None:
        self.start, self.end, self.speaker = start, end, speaker


def test_srt_and_vtt_carry_speakers_on_a_diarize_deployment(server, meeting):
    url = f"{server}/openai/deployments/whisper-speakers/audio/transcriptions?api-version={API_VERSION}"
    audio = encode(meeting.samples, "wav")
    answers = {}
    for response_format in ("srt", "vtt"):
        response = requests.post(url, headers={"api-key": API_KEY}, files={"file": ("m.wav", audio)},
                                 data={"response_format": response_format}, timeout=300)
        assert response.status_code == 200, response.text
        answers[response_format] = response.text
    subtitles = list(srt.parse(answers["srt"]))
    assert {re.match(r"^(\w+): ", cue.content).group(1) for cue in subtitles} == {"A", "B"}
    cues = webvtt.from_buffer(__import__("io").StringIO(answers["vtt"]))
    voices = [re.match(r"^<v ([^>]+)>", cue.raw_text).group(1) for cue in cues]
    assert list(dict.fromkeys(voices)) == ["A", "B"]
    labelled = [(cue.start.total_seconds(), cue.end.total_seconds(), cue.content.split(": ")[0]) for cue in subtitles]
    assert meetings.speech_time_accuracy(meeting, labelled) >= 0.85


def one_second_clip() -> str:
    return "data:audio/wav;base64," + base64.b64encode(encode(np.zeros(16000, dtype=np.float32), "wav")).decode()


def long_clip() -> str:
    return "data:audio/wav;base64," + base64.b64encode(encode(np.zeros(16000 * 12, dtype=np.float32), "wav")).decode()


def good_clip() -> str:
    samples = 0.1 * np.sin(2 * np.pi * 200 * np.arange(16000 * 3) / 16000)
    return "data:audio/wav;base64," + base64.b64encode(encode(samples.astype(np.float32), "wav")).decode()


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"known_speaker_names[]": ["a"], "known_speaker_references[]": ["https://example.com/a.wav"]}, "known_speaker_references"),
        ({"known_speaker_names[]": ["a"], "known_speaker_references[]": ["data:audio/wav;base64,@@@"]}, "known_speaker_references"),
        ({"known_speaker_names[]": ["a"], "known_speaker_references[]": ["data:audio/wav;base64,AAAA"]}, "known_speaker_references"),
        ({"known_speaker_names[]": ["a"], "known_speaker_references[]": [one_second_clip()]}, "known_speaker_references"),
        ({"known_speaker_names[]": ["a"], "known_speaker_references[]": [long_clip()]}, "known_speaker_references"),
        ({"known_speaker_names[]": list("abcde"), "known_speaker_references[]": [good_clip()] * 5}, "known_speaker_names"),
        ({"known_speaker_names[]": ["a", "b"]}, "known_speaker_references"),
        ({"known_speaker_references[]": [good_clip()]}, "known_speaker_names"),
        ({"known_speaker_names[]": ["a", "a"], "known_speaker_references[]": [good_clip()] * 2}, "known_speaker_names"),
        ({"known_speaker_names[]": ["a", "b"], "known_speaker_references[]": [good_clip()]}, "known_speaker_references"),
    ],
    ids=["not-a-data-url", "bad-base64", "not-audio", "1-second", "12-seconds", "five-speakers",
         "names-without-references", "references-without-names", "same-name-twice", "counts-differ"],
)
def test_bad_known_speakers_are_400_naming_the_field(client, fields, param):
    response = client.post(
        f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}",
        headers={"api-key": API_KEY},
        data={"file": (__import__("io").BytesIO(encode(good_clip_samples(), "wav")), "a.wav"),
              "response_format": "diarized_json", **fields},
    )
    assert response.status_code == 400
    assert response.json["error"]["param"] == param


def good_clip_samples() -> np.ndarray:
    return (0.1 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)


def test_known_speakers_without_speaker_output_are_400(client):
    response = client.post(
        f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}",
        headers={"api-key": API_KEY},
        data={"file": (__import__("io").BytesIO(encode(good_clip_samples(), "wav")), "a.wav"),
              "response_format": "json", "known_speaker_names[]": ["a"], "known_speaker_references[]": [good_clip()]},
    )
    assert response.status_code == 400 and response.json["error"]["param"] == "known_speaker_names"
