"""Whisper's languages: ISO codes and the English names the hosted service reports."""

from __future__ import annotations

from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

LANGUAGE_NAMES: dict[str, str] = dict(LANGUAGES)


def normalize_language(value: str) -> str | None:
    """Return Whisper's code for a code or English name ("ja", "Japanese"), else None."""
    key = value.strip().lower()
    if key in LANGUAGE_NAMES:
        return key
    return TO_LANGUAGE_CODE.get(key)


def language_name(code: str) -> str:
    """The full lowercase English name, as Azure's verbose_json reports it."""
    return LANGUAGE_NAMES.get(code, code)
