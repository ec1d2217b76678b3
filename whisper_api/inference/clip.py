"""What both long-form strategies share: a job's prefixes, language detection, speech regions and
a decoded row's segments."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..transcript import TranscriptionJob
from .decoder import MAX_NEW_TOKENS, Decoded, Decoder
from .fallback import FallbackDecoder
from .logprobs import chosen_logprobs, with_logprobs
from .model import LoadedModel
from .segments import ChunkText, split_segments
from .vad import SpeechDetector, SpeechRegion, VadOptions, speech_regions

MAX_PROMPT_TOKENS = 448 - MAX_NEW_TOKENS - 4 - 1  # room for <|startofprev|> and the task tokens


class ClipDecoding:
    """What both strategies share: prefixes, language detection, chunk decoding with fallback."""

    def __init__(self, model: LoadedModel, decoder: Decoder, fallback: FallbackDecoder, detector: SpeechDetector) -> None:
        self.model = model
        self.decoder = decoder
        self.fallback = fallback
        self.detector = detector

    def prefix(self, language: str, task: str, context: list[int]) -> tuple[int, ...]:
        tokens = self.model.tokens
        head = (tokens.start_of_previous, *context[-MAX_PROMPT_TOKENS:]) if context else ()
        return (*head, *tokens.transcript_start(language, task))

    def prompt_tokens(self, job: TranscriptionJob) -> list[int]:
        return self.model.text_tokens(" " + job.prompt.strip()) if job.prompt and job.prompt.strip() else []

    def detect_language(self, encoded: torch.Tensor) -> str:
        """The language most probable over the given chunks together (English on an English-only
        model, which has no language tokens to ask)."""
        if self.model.english_only:
            return "en"
        probabilities = self.decoder.language_probabilities(encoded).mean(dim=0)
        return list(self.model.tokens.languages)[int(probabilities.argmax())]

    def encode(self, pieces: list[np.ndarray]) -> torch.Tensor:
        return self.decoder.encode_audio(pieces)

    def speech(self, job: TranscriptionJob) -> tuple[np.ndarray, list[SpeechRegion], VadOptions]:
        """The clip's frame probabilities and speech regions, found with the request's own
        speech options (`chunking_strategy`) over the server's."""
        options = replace(self.detector.options, **job.speech.changes())
        probabilities = self.detector.frame_probabilities(job.samples, job.cancellation)
        return probabilities, speech_regions(probabilities, job.duration, options), options

    def split(self, job: TranscriptionJob, encoded: torch.Tensor, prefix: tuple[int, ...], result: Decoded,
              offset: float, duration: float, language: str, **options) -> ChunkText:
        """A decoded row's segments, with its tokens' log probabilities when the job asks."""
        text = split_segments(self.model, result, offset, duration, language, **options)
        if not job.logprobs or not text.segments:
            return text
        logprobs = self.decoder.exclusive(lambda: chosen_logprobs(self.decoder, encoded, prefix, result.tokens))
        return replace(text, segments=with_logprobs(self.model, text.segments, result, logprobs))
