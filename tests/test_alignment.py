"""Grouping tokens into words never splits a multi-byte character and keeps punctuation attached."""

from __future__ import annotations

import pytest
from transformers import WhisperTokenizer

from whisper_api.alignment import group_words


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
    assert words[0].start == 0.0 and words[-1].end == pytest.approx(len(tokens) * 0.1)
