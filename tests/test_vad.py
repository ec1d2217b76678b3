"""Speech detection: Silero VAD finds synthesized Japanese speech where it is, and none in
silence, quiet noise or a chime melody; the region rules (hysteresis, shortest speech, shortest
pause, padding) hold on probabilities made by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.long_clips import audible, noise, tones
from tests.support.speech import SAMPLE_RATE, SECOND_VOICE, japanese_speech, silence
from whisper_api.inference.vad import FRAME_SECONDS, SpeechDetector, SpeechRegion, VadOptions, speech_regions

OPTIONS = VadOptions()
# Silero's onset lags a soft first sound by a frame or two and padding adds 0.2 s: a region
# starts and ends within this of the speech it holds.
EDGE_TOLERANCE = 0.35


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector(OPTIONS)


def sentences_with_pauses() -> tuple[np.ndarray, list[tuple[float, float]]]:
    parts, spans, position = [silence(1.0)], [], 1.0
    for text, voice, pause in (
        ("今日はいい天気ですね。", None, 1.5),
        ("東京駅までの行き方を教えてください。", SECOND_VOICE, 2.0),
        ("明日の会議は午後から始まります。", None, 1.0),
    ):
        speech = audible(japanese_speech(text, voice) if voice else japanese_speech(text))
        parts += [speech, silence(pause)]
        spans.append((position, position + len(speech) / SAMPLE_RATE))
        position += len(speech) / SAMPLE_RATE + pause
    return np.concatenate(parts), spans


def test_each_sentence_is_one_region_around_its_speech(detector):
    samples, spans = sentences_with_pauses()
    regions = detector.regions(samples)
    assert len(regions) == len(spans)
    for region, (start, end) in zip(regions, spans):
        assert abs(region.start - start) <= EDGE_TOLERANCE and region.start <= start
        assert abs(region.end - end) <= EDGE_TOLERANCE and region.end >= end - FRAME_SECONDS


def test_one_probability_per_32_ms_frame(detector):
    samples, _ = sentences_with_pauses()
    probabilities = detector.frame_probabilities(samples)
    assert probabilities.dtype == np.float32
    assert len(probabilities) == -(-len(samples) // 512)
    assert detector.regions(samples, probabilities) == detector.regions(samples)


def test_probabilities_do_not_depend_on_where_the_model_calls_are_split(detector, monkeypatch):
    """The LSTM state and the 64-sample context carry from one ONNX call to the next."""
    from whisper_api.inference import vad

    samples = np.concatenate([japanese_speech("この資料を来週までに確認してください。")] * 3)
    in_one_call = detector.frame_probabilities(samples)
    monkeypatch.setattr(vad, "FRAMES_PER_CALL", 37)
    in_many_calls = detector.frame_probabilities(samples)
    assert len(in_one_call) < 512 and in_one_call.max() > 0.9
    np.testing.assert_allclose(in_many_calls, in_one_call, atol=1e-5)


@pytest.mark.parametrize(
    "samples",
    [silence(10.0), noise(10.0), tones(10.0), np.zeros(0, dtype=np.float32), silence(0.01)],
    ids=["silence", "quiet-noise", "chime-melody", "empty", "shorter-than-a-frame"],
)
def test_no_speech_in_silence_noise_or_tones(detector, samples):
    assert detector.regions(samples) == []


def test_speech_at_the_very_end_ends_with_the_clip(detector):
    speech = audible(japanese_speech("週末は家族と公園に行きました。"))
    samples = np.concatenate([silence(2.0), speech[: len(speech) // 2]])
    regions = detector.regions(samples)
    assert len(regions) == 1
    assert regions[0].end == pytest.approx(len(samples) / SAMPLE_RATE, abs=1e-3)


def test_loading_the_detector_leaves_torch_threads_alone():
    import torch

    before = torch.get_num_threads()
    SpeechDetector(OPTIONS).regions(silence(1.0))
    assert torch.get_num_threads() == before


def frames(*runs: tuple[float, float]) -> np.ndarray:
    """Per-frame probabilities from (probability, seconds) runs."""
    return np.concatenate([np.full(round(seconds / FRAME_SECONDS), value, np.float32) for value, seconds in runs])


def test_a_pause_shorter_than_min_silence_stays_inside_the_region():
    probabilities = frames((0.0, 1.0), (0.9, 2.0), (0.1, 0.3), (0.9, 2.0), (0.0, 1.0))
    regions = speech_regions(probabilities, len(probabilities) * FRAME_SECONDS, VadOptions(speech_pad_ms=0))
    assert len(regions) == 1


def test_a_dip_between_the_two_thresholds_does_not_end_speech():
    probabilities = frames((0.0, 1.0), (0.9, 2.0), (0.4, 2.0), (0.9, 2.0), (0.0, 1.0))
    regions = speech_regions(probabilities, len(probabilities) * FRAME_SECONDS, VadOptions(speech_pad_ms=0))
    assert len(regions) == 1


def test_blips_shorter_than_min_speech_are_dropped():
    probabilities = frames((0.0, 1.0), (0.9, 0.1), (0.0, 2.0), (0.9, 1.0), (0.0, 1.0))
    regions = speech_regions(probabilities, len(probabilities) * FRAME_SECONDS, VadOptions(speech_pad_ms=0))
    assert len(regions) == 1 and regions[0].start == pytest.approx(3.1, abs=0.04)


def test_padding_splits_a_short_pause_between_neighbours_and_stays_in_the_clip():
    probabilities = frames((0.9, 1.0), (0.0, 0.6), (0.9, 1.0))
    duration = len(probabilities) * FRAME_SECONDS
    options = VadOptions(min_silence_ms=500, speech_pad_ms=400)
    first, second = speech_regions(probabilities, duration, options)
    assert first.start == 0.0 and second.end == pytest.approx(duration)
    assert first.end == pytest.approx(second.start) == pytest.approx(1.3, abs=0.04)


def test_regions_are_ordered_padded_and_inside_the_clip(detector):
    samples, _ = sentences_with_pauses()
    regions = detector.regions(samples)
    duration = len(samples) / SAMPLE_RATE
    assert all(0 <= r.start < r.end <= duration for r in regions)
    assert all(a.end <= b.start for a, b in zip(regions, regions[1:]))
    assert all(isinstance(r, SpeechRegion) for r in regions)
