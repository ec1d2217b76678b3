"""Long-form test clips: synthesized Japanese sentences at known offsets, with the silences,
noise and tones between them known too, so a transcript's every segment can be checked against
where speech really is (tests/support/long_form_scoring.py does the checking).

Each sentence is trimmed to its audible part, so its span starts at its first sound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tests.support.speech import DEFAULT_VOICE, MEETING_SENTENCES, SAMPLE_RATE, SECOND_VOICE, Voice, japanese_speech

NonSpeechKind = Literal["silence", "noise", "tones", "pause"]

# Pauses between sentences from this length on are non-speech a segment must not stretch over.
LONG_PAUSE_SECONDS = 1.0
AUDIBLE_LEVEL = 0.01  # -40 dBFS: where a synthesized sentence's sound starts and ends
NOISE_DBFS = -45.0  # quiet room noise: audible, far below the speech (peaks near -5 dBFS)
TONES_DBFS = -12.0  # a chime melody about as loud as the speech

# Sentences of this module's own, lecture and announcement style (the meeting ones live in
# tests/support/speech.py).
LECTURE_SENTENCES: tuple[str, ...] = (
    "それでは本日の講義を始めます。",
    "前回は光の性質について学びました。",
    "今日は音が空気の中を伝わる仕組みを考えます。",
    "音の速さは気温によって少しずつ変わります。",
    "たとえば冬の朝は夏の昼よりも音が遅く進みます。",
    "この表を見ると違いがよくわかります。",
    "次に音の高さと振動の回数の関係を見てみましょう。",
    "振動が速いほど高い音に聞こえます。",
    "楽器の弦を短くすると音が高くなるのはこのためです。",
    "ここまでで何か質問はありますか。",
    "では実験の準備をしてください。",
    "結果は来週までにまとめて提出してください。",
)
ANNOUNCEMENT_SENTENCES: tuple[str, ...] = (
    "まもなく三番線に快速電車が参ります。",
    "危ないですから黄色い線の内側までお下がりください。",
    "この電車は次の駅で急行の通過を待ちます。",
)
DIALOG_SENTENCES: tuple[str, ...] = (
    "おはようございます、今日の予定を確認しましょう。",
    "はい、午前中はお客様との打ち合わせがあります。",
    "資料の準備はもうできていますか。",
    "昨日のうちに印刷して机の上に置いておきました。",
    "ありがとうございます、とても助かります。",
    "午後は工場の見学に行く予定です。",
    "車で行きますか、それとも電車で行きますか。",
    "駐車場が狭いので電車で行きましょう。",
    "わかりました、駅で一時に待ち合わせましょう。",
    "では、後ほどよろしくお願いします。",
)


@dataclass(frozen=True)
class Sentence:
    text: str
    start: float
    end: float
    complete: bool = True  # False for a sentence the clip cuts off: its text is not all there


@dataclass(frozen=True)
class NonSpeech:
    kind: NonSpeechKind
    start: float
    end: float


@dataclass(frozen=True)
class LongFormClip:
    name: str
    samples: np.ndarray = field(repr=False)
    sentences: tuple[Sentence, ...]
    non_speech: tuple[NonSpeech, ...]

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def audible(samples: np.ndarray) -> np.ndarray:
    """The samples from the first to the last one louder than AUDIBLE_LEVEL."""
    loud = np.flatnonzero(np.abs(samples) > AUDIBLE_LEVEL)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples[:0]


def noise(seconds: float, dbfs: float = NOISE_DBFS, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE))
    return (values * 10 ** (dbfs / 20)).astype(np.float32)


def tones(seconds: float, dbfs: float = TONES_DBFS) -> np.ndarray:
    """A chime melody: notes of a pentatonic scale, 0.4 s each, with two overtones and a decay."""
    scale = (523.25, 587.33, 659.26, 783.99, 880.00, 1046.5)
    melody = (0, 2, 4, 3, 1, 5, 4, 2)
    note_samples = round(0.4 * SAMPLE_RATE)
    time = np.arange(note_samples) / SAMPLE_RATE
    envelope = np.exp(-time * 6.0)
    notes = []
    for index in range(-(-round(seconds * SAMPLE_RATE) // note_samples)):
        frequency = scale[melody[index % len(melody)]]
        note = sum(np.sin(2 * np.pi * frequency * k * time) / k for k in (1, 2, 3))
        notes.append(note * envelope)
    melody_samples = np.concatenate(notes)[: round(seconds * SAMPLE_RATE)]
    peak = np.abs(melody_samples).max()
    return (melody_samples / peak * 10 ** (dbfs / 20)).astype(np.float32)


class ClipBuilder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.parts: list[np.ndarray] = []
        self.sentences: list[Sentence] = []
        self.non_speech: list[NonSpeech] = []
        self.samples = 0

    @property
    def now(self) -> float:
        return self.samples / SAMPLE_RATE

    def _append(self, samples: np.ndarray) -> tuple[float, float]:
        start = self.now
        self.parts.append(samples.astype(np.float32))
        self.samples += len(samples)
        return start, self.now

    def sentence(self, text: str, speech: np.ndarray, complete: bool = True) -> "ClipBuilder":
        """`speech` saying `text`, a sentence the clip's scoring looks for."""
        start, end = self._append(speech)
        self.sentences.append(Sentence(text, start, end, complete=complete))
        return self

    def say(self, text: str, voice: Voice = DEFAULT_VOICE, fraction: float = 1.0) -> "ClipBuilder":
        speech = audible(japanese_speech(text, voice))
        return self.sentence(text, speech[: round(len(speech) * fraction)], complete=fraction >= 1.0)

    def pause(self, seconds: float) -> "ClipBuilder":
        start, end = self._append(np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32))
        if seconds >= LONG_PAUSE_SECONDS:
            self.non_speech.append(NonSpeech("pause", start, end))
        return self

    def gap(self, kind: NonSpeechKind, samples: np.ndarray) -> "ClipBuilder":
        start, end = self._append(samples)
        self.non_speech.append(NonSpeech(kind, start, end))
        return self

    def build(self) -> LongFormClip:
        return LongFormClip(self.name, np.concatenate(self.parts), tuple(self.sentences), tuple(self.non_speech))


def two_voice_dialog() -> LongFormClip:
    """Two speakers take turns through ten sentences, pauses from 0.3 to 3 s: about 40 s."""
    pauses = (0.3, 1.2, 0.5, 2.0, 0.8, 3.0, 0.4, 1.6, 2.5)
    builder = ClipBuilder("two_voice_dialog").pause(0.5)
    for index, text in enumerate(DIALOG_SENTENCES):
        builder.say(text, SECOND_VOICE if index % 2 else DEFAULT_VOICE)
        builder.pause(pauses[index] if index < len(pauses) else 0.5)
    return builder.build()


def silence_noise_and_tones() -> LongFormClip:
    """Speech, 40 s of silence, speech, 8 s of quiet noise, speech, 10 s of chimes, speech:
    about 85 s."""
    texts = LECTURE_SENTENCES[:8]
    builder = ClipBuilder("silence_noise_and_tones").pause(0.5)
    builder.say(texts[0]).pause(0.8).say(texts[1]).gap("silence", np.zeros(40 * SAMPLE_RATE, np.float32))
    builder.say(texts[2]).pause(0.8).say(texts[3]).gap("noise", noise(8.0))
    builder.say(texts[4], SECOND_VOICE).pause(0.8).say(texts[5], SECOND_VOICE).gap("tones", tones(10.0))
    builder.say(texts[6]).pause(0.8).say(texts[7]).pause(0.5)
    return builder.build()


def long_monologue() -> LongFormClip:
    """One speaker, twelve sentences, no pause longer than 0.3 s: about 45 s with nowhere
    silent to cut, so a chunk must be cut inside speech."""
    generator = np.random.default_rng(1)
    builder = ClipBuilder("long_monologue").pause(0.3)
    for text in LECTURE_SENTENCES:
        builder.say(text).pause(float(generator.uniform(0.1, 0.3)))
    return builder.build()


def repeated_sentences() -> LongFormClip:
    """Three announcements said four times over, 1.5 to 2 s apart: about 60 s. Conditioning on
    the previous text tempts a decoder to repeat the sentence it just wrote."""
    generator = np.random.default_rng(2)
    builder = ClipBuilder("repeated_sentences").pause(0.5)
    for _ in range(4):
        for text in ANNOUNCEMENT_SENTENCES:
            builder.say(text).pause(float(generator.uniform(1.5, 2.0)))
    return builder.build()


def late_start_cut_off() -> LongFormClip:
    """5 s of silence, four sentences, and a fifth cut off halfway: the clip ends mid-speech."""
    builder = ClipBuilder("late_start_cut_off").gap("silence", np.zeros(5 * SAMPLE_RATE, np.float32))
    for text in MEETING_SENTENCES[5], MEETING_SENTENCES[13], MEETING_SENTENCES[16], MEETING_SENTENCES[21]:
        builder.say(text).pause(0.8)
    builder.say(LECTURE_SENTENCES[8], fraction=0.5)
    return builder.build()


CLIPS = {
    "two_voice_dialog": two_voice_dialog,
    "silence_noise_and_tones": silence_noise_and_tones,
    "long_monologue": long_monologue,
    "repeated_sentences": repeated_sentences,
    "late_start_cut_off": late_start_cut_off,
}


def all_clips() -> list[LongFormClip]:
    return [build() for build in CLIPS.values()]
