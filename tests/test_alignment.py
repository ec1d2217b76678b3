"""Grouping tokens into words never splits a multi-byte character and attaches punctuation as
openai/whisper does (opening marks to the word after, closing marks to the word before, Japanese
brackets too); a segment with words spans exactly its words."""

from __future__ import annotations

import pytest
from transformers import WhisperTokenizer

from whisper_api.alignment import fit_words_to_segment, group_words, median_word_duration
from whisper_api.inference.segments import renumbered
from whisper_api.transcript import Segment, Word


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return WhisperTokenizer.from_pretrained(str(model_dir))


def spans_for(tokens: list[int]) -> list[tuple[float, float]]:
    return [(index * 0.1, index * 0.1 + 0.1) for index in range(len(tokens))]


def test_rare_kanji_split_over_byte_tokens_stays_whole(tokenizer):
    text = "鬱蒼とした森"  # 鬱 and 蒼 are rare: byte-level BPE spells them with several tokens
    tokens = tokenizer.encode(text, add_special_tokens=False)
    assert len(tokens) > len(text) - 2, "the test needs a character spread over several tokens"
    words = group_words(tokens, spans_for(tokens), tokenizer.decode, "ja")
    assert "".join(word.word for word in words) == text
    assert all("\ufffd" not in word.word for word in words)
    assert [word.start for word in words] == sorted(word.start for word in words)


def test_english_words_split_on_spaces_with_punctuation_attached(tokenizer):
    tokens = tokenizer.encode(" Ask not, what your country can do.", add_special_tokens=False)
    words = group_words(tokens, spans_for(tokens), tokenizer.decode, "en")
    assert [word.word for word in words] == ["Ask", "not,", "what", "your", "country", "can", "do."]
    # a word's time is its text's: the closing "." is not speech and does not stretch "do"
    assert words[0].start == 0.0 and words[-1].end == pytest.approx((len(tokens) - 1) * 0.1)


@pytest.mark.parametrize(("text", "expected"), [
    (' He said "hello" to me.', ["He", "said", '"hello"', "to", "me."]),
    (" I was (in the house) then.", ["I", "was", "(in", "the", "house)", "then."]),
    (" Well - I think so.", ["Well", "- I", "think", "so."]),
    (" \u201cQuoted,\u201d he said.", ["\u201cQuoted,\u201d", "he", "said."]),
    (" a well-known f(x) thing", ["a", "well-known", "f(x)", "thing"]),
])
def test_opening_punctuation_joins_the_word_after_it(tokenizer, text, expected):
    tokens = tokenizer.encode(text, add_special_tokens=False)
    assert [word.word for word in group_words(tokens, spans_for(tokens), tokenizer.decode, "en")] == expected


@pytest.mark.parametrize("text", [
    "東京は「東京」です。", "『大阪』と（京都）と【速報】と〈前〉と《後》です。", "彼は\"東京\"と言った。",
    "ここは＂横浜＂です。", "「はい」「いいえ」",
])
def test_japanese_brackets_and_quotes_stay_with_the_words_they_enclose(tokenizer, text):
    tokens = tokenizer.encode(text, add_special_tokens=False)
    words = [word.word for word in group_words(tokens, spans_for(tokens), tokenizer.decode, "ja")]
    assert "".join(words) == text
    openers, closers = "「『（【〈《", "」』）】〉》"
    quotes = "\"＂"
    for word in words:
        assert word[-1] not in openers, f"{word!r} ends with an opening bracket: {words}"
        assert word[0] not in closers, f"{word!r} starts with a closing bracket: {words}"
        assert word.strip(openers + closers + quotes + "。、"), f"{word!r} is punctuation alone: {words}"
    for quote in quotes:  # each quoted run opens on the word after its first mark, closes on the last
        marks = [index for index, word in enumerate(words) for character in word if character == quote]
        for opening, closing in zip(marks[::2], marks[1::2]):
            assert words[opening].startswith(quote) and words[closing].endswith(quote), words


def test_a_segment_with_words_spans_exactly_its_words():
    words = [Word("And", 8.20, 8.40), Word("so", 8.45, 8.60), Word("fellow", 8.7, 9.1)]
    segment = Segment(0, 0, 7.76, 9.6, " And so fellow", [1, 2, 3], 0.0, -0.2, 1.1, 0.01, words)
    placed = renumbered(segment, 0, duration=30.0, previous_end=0.0)
    assert (placed.start, placed.end) == (8.20, 9.1)
    assert placed.words == words


def test_a_first_word_that_swallowed_the_pause_before_it_is_cut_to_twice_the_median():
    words = [Word("ask", 10.0, 14.0)] + [Word(f"w{index}", 14.0 + index * 0.3, 14.3 + index * 0.3) for index in range(6)]
    start, end, fitted = fit_words_to_segment(13.4, 15.8, words, median_word_duration(words), last_speech=9.0)
    assert fitted[0].start == pytest.approx(14.0 - 2 * 0.3)  # the pause is not speech
    assert start == fitted[0].start and end == fitted[-1].end
