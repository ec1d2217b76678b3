"""OpenAI's sequential long-form decoding loop, on top of transformers' Whisper `generate`.

Each 30 s window is encoded once; one decoder step on <|startoftranscript|> gives the language
and no-speech probabilities; `generate` decodes with timestamps, falling back to higher
temperatures when the text repeats itself (compression ratio) or the model is unsure (log
probability), exactly as openai/whisper's transcribe() does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from .audio import SAMPLE_RATE
from .alignment import group_words
from .repetition import trim_repetition
from .transcript import Segment, TranscriptionJob

HOP_LENGTH = 160
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames a second
WINDOW_FRAMES = 30 * FRAMES_PER_SECOND
TIME_PRECISION = 0.02  # seconds per timestamp token
INPUT_STRIDE = 2  # mel frames per encoder position
MAX_NEW_TOKENS = 224
MAX_PROMPT_TOKENS = 448 - MAX_NEW_TOKENS - 4 - 1  # room for <|startofprev|> and the task tokens


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 1
    compression_ratio_threshold: float = 2.4
    logprob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    condition_on_previous_text: bool = True
    temperature_increment: float = 0.2
    # Windows quieter than this (RMS, dB below full scale) are skipped undecoded: Whisper
    # invents text on digital silence ("ん", "ご視聴ありがとうございました") however it is asked.
    silence_rms_dbfs: float = -60.0


@dataclass(frozen=True)
class WindowResult:
    tokens: list[int]  # generated tokens, end-of-text excluded
    temperature: float
    avg_logprob: float
    compression_ratio: float
    token_spans: list[tuple[float, float]] = field(default_factory=list)  # per token, with word timestamps


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def temperature_schedule(start: float, increment: float) -> list[float]:
    temperatures = [round(start, 2)]
    while temperatures[-1] + increment <= 1.0 + 1e-6:
        temperatures.append(round(temperatures[-1] + increment, 2))
    return temperatures


class SequentialDecoder:
    """Transcribes one job of any length; not thread-safe (the engine's lock guards it)."""

    def __init__(self, model, feature_extractor, tokenizer, device: torch.device, dtype: torch.dtype,
                 options: DecodingOptions) -> None:
        self.model = model
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.options = options
        config = model.generation_config
        self.start_of_transcript = config.decoder_start_token_id
        self.end_of_text = config.eos_token_id
        self.no_timestamps = config.no_timestamps_token_id
        self.timestamp_begin = config.no_timestamps_token_id + 1
        self.no_speech = config.no_timestamps_token_id - 1
        self.start_of_previous = config.prev_sot_token_id
        self.language_ids = {code.strip("<|>"): token for code, token in config.lang_to_id.items()}

    def log_mel(self, samples: np.ndarray) -> torch.Tensor:
        """Log-mel of the whole clip plus 30 s of silence, so every window slices to full length."""
        padded = np.concatenate([samples, np.zeros(WINDOW_FRAMES * HOP_LENGTH, dtype=np.float32)])
        features = self.feature_extractor(
            padded, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="longest", truncation=False
        ).input_features
        return features

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        return self.model.get_encoder()(window.to(self.device, self.dtype)).last_hidden_state

    def first_step_probabilities(self, encoded: torch.Tensor) -> torch.Tensor:
        """Probabilities of the token after <|startoftranscript|>: languages and no-speech."""
        start = torch.tensor([[self.start_of_transcript]], device=self.device)
        hidden = self.model.model.decoder(input_ids=start, encoder_hidden_states=encoded).last_hidden_state
        logits = self.model.proj_out(hidden[:, -1]).float()
        return logits.softmax(dim=-1)[0].cpu()

    def detect_language(self, probabilities: torch.Tensor) -> str:
        codes = list(self.language_ids)
        scores = probabilities[[self.language_ids[code] for code in codes]]
        return codes[int(scores.argmax())]

    def transcribe(self, job: TranscriptionJob) -> tuple[str, list[Segment]]:
        """Returns the language code used and the segments, in order."""
        mel = self.log_mel(job.samples)
        content_frames = len(job.samples) // HOP_LENGTH
        language = job.language
        prompt_tokens: list[int] = self.text_tokens(" " + job.prompt.strip()) if job.prompt else []
        previous_tokens: list[int] = []
        segments: list[Segment] = []
        seek = 0
        while seek < content_frames:
            if job.on_progress:
                job.on_progress(seek, content_frames)
            window_frames = min(WINDOW_FRAMES, content_frames - seek)
            time_offset = seek / FRAMES_PER_SECOND
            if self.is_quiet(job.samples[seek * HOP_LENGTH : (seek + window_frames) * HOP_LENGTH]):
                seek += window_frames
                continue
            encoded = self.encode(mel[:, :, seek : seek + WINDOW_FRAMES])
            probabilities = self.first_step_probabilities(encoded)
            if language is None:
                language = self.detect_language(probabilities)
            no_speech_prob = float(probabilities[self.no_speech])
            context = (prompt_tokens + previous_tokens)[-MAX_PROMPT_TOKENS:]
            result = self.decode_window(
                encoded, language, job.task, context, job.temperature, no_speech_prob, job.word_timestamps
            )
            if self.is_silence(no_speech_prob, result, job.temperature):
                seek += window_frames  # silence: skip it rather than invent text
                continue
            new_segments, consumed = self.split_segments(
                result, seek, time_offset, window_frames, no_speech_prob, language
            )
            for segment in new_segments:
                if segment.text.strip():
                    previous_end = segments[-1].end if segments else 0.0
                    segments.append(_renumbered(segment, len(segments), job.duration, previous_end))
            if self.options.condition_on_previous_text and result.temperature <= 0.5:
                previous_tokens.extend(result.tokens)
            else:
                previous_tokens = []  # the text went wrong enough to need sampling: don't build on it
            seek += max(consumed, 1)
        if job.on_progress:
            job.on_progress(content_frames, content_frames)
        return language or "en", segments

    def is_quiet(self, samples: np.ndarray) -> bool:
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
        return rms <= 10 ** (self.options.silence_rms_dbfs / 20)

    def is_silence(self, no_speech_prob: float, result: WindowResult, requested_temperature: float) -> bool:
        """openai/whisper's rule (the model hears no speech and is unsure of what it wrote), plus
        one of ours: where it hears no speech and greedy decoding already failed the quality
        checks, text sampled at a higher temperature is invented ("このように、" over a pause)."""
        if no_speech_prob <= self.options.no_speech_threshold:
            return False
        return result.avg_logprob < self.options.logprob_threshold or result.temperature > requested_temperature

    def text_tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode_window(
        self, encoded: torch.Tensor, language: str, task: str, context: list[int], temperature: float,
        no_speech_prob: float, word_timestamps: bool = False,
    ) -> WindowResult:
        result: WindowResult | None = None
        for current in temperature_schedule(temperature, self.options.temperature_increment):
            result = self.generate(encoded, language, task, context, current, word_timestamps)
            too_repetitive = result.compression_ratio > self.options.compression_ratio_threshold
            too_unsure = result.avg_logprob < self.options.logprob_threshold
            if self.is_silence(no_speech_prob, result, temperature) or not (too_repetitive or too_unsure):
                break  # silence needs no retry: the window is skipped anyway
        assert result is not None
        # every temperature looped: keep the text once rather than the loop
        return replace(result, tokens=trim_repetition(result.tokens, self.end_of_text))

    def generate_arguments(
        self, encoded: torch.Tensor, language: str, task: str, context: list[int], temperature: float,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> dict:
        """model.generate's arguments for windows already encoded: greedy or beam search at
        temperature 0, sampling above it, the context as prompt ids."""
        sampling = temperature > 0
        arguments: dict = dict(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
            language=language,
            task=task,
            return_timestamps=True,
            # one pass per window: without it, generate decodes the window again from its last
            # timestamp on, as if it held more audio (three passes over some 30 s windows), and
            # the loop around it moves to the next window itself
            force_unique_generate_call=True,
            max_new_tokens=max_new_tokens,
            num_beams=1 if sampling else self.options.beam_size,
            do_sample=sampling,
        )
        if sampling:
            arguments["temperature"] = temperature
        if context:
            arguments["prompt_ids"] = torch.tensor([self.start_of_previous, *context], device=self.device)
        return arguments

    def generate(
        self, encoded: torch.Tensor, language: str, task: str, context: list[int], temperature: float,
        word_timestamps: bool = False,
    ) -> WindowResult:
        arguments = self.generate_arguments(encoded, language, task, context, temperature)
        arguments.update(return_dict_in_generate=True, output_scores=True)
        if word_timestamps:
            # token times from the cross-attention of the model's alignment heads (DTW)
            arguments["return_token_timestamps"] = True
        # one pass over the window (generate_arguments): the raw output of that pass, a batch of
        # one: every token (prompt included) and each generated step's scores
        raw = self.model.generate(**arguments)
        sequence = raw["sequences"].reshape(-1).tolist()
        scores = raw.get("scores") or []
        generated = sequence[len(sequence) - len(scores) :] if scores else []
        tokens = [token for token in generated if token != self.end_of_text]
        if "sequences_scores" in raw:
            avg_logprob = float(raw["sequences_scores"])
        else:
            avg_logprob = self.average_logprob(scores, generated, temperature)
        text = self.tokenizer.decode([token for token in tokens if token < self.end_of_text])
        spans: list[tuple[float, float]] = []
        if word_timestamps and "token_timestamps" in raw:
            # token_timestamps[i] is where token i ends; it starts where the one before it ends
            times = raw["token_timestamps"].reshape(-1).tolist()
            first = len(sequence) - len(generated)
            spans = [(times[index - 1], times[index]) for index in range(first, first + len(tokens))]
        return WindowResult(tokens, temperature, avg_logprob, compression_ratio(text), spans)

    @staticmethod
    def average_logprob(scores: tuple[torch.Tensor, ...], generated: list[int], temperature: float) -> float:
        if not generated:
            return 0.0
        # generate divided the logits by the temperature; undo it as openai/whisper scores raw logits
        scale = temperature if temperature > 0 else 1.0
        total = 0.0
        for step, token in zip(scores, generated):
            row = step.reshape(-1).float() * scale
            finite = torch.where(torch.isfinite(row), row, torch.full_like(row, -1e9))
            total += float(torch.log_softmax(finite, dim=-1)[token])
        return total / len(generated)

    def split_segments(
        self, result: WindowResult, seek: int, time_offset: float, window_frames: int, no_speech_prob: float,
        language: str = "en",
    ) -> tuple[list[Segment], int]:
        """Cut the window's tokens at timestamp pairs; return segments and mel frames consumed."""
        tokens = result.tokens
        is_timestamp = [token >= self.timestamp_begin for token in tokens]
        single_timestamp_ending = is_timestamp[-2:] == [False, True]
        boundaries = [index + 1 for index in range(len(tokens) - 1) if is_timestamp[index] and is_timestamp[index + 1]]
        pieces: list[tuple[float, float, int, int]] = []  # start, end, first and last+1 token index
        if boundaries:
            if single_timestamp_ending:
                boundaries.append(len(tokens))
            last = 0
            for boundary in boundaries:
                piece = tokens[last:boundary]
                start = (piece[0] - self.timestamp_begin) * TIME_PRECISION if is_timestamp[last] else 0.0
                end = (piece[-1] - self.timestamp_begin) * TIME_PRECISION
                pieces.append((start, end, last, boundary))
                last = boundary
            if single_timestamp_ending:
                consumed = window_frames
            else:
                consumed = (tokens[last - 1] - self.timestamp_begin) * INPUT_STRIDE
        else:
            duration = window_frames / FRAMES_PER_SECOND
            stamps = [token for token in tokens if token >= self.timestamp_begin]
            if stamps and stamps[-1] != self.timestamp_begin:
                duration = (stamps[-1] - self.timestamp_begin) * TIME_PRECISION
            pieces.append((0.0, duration, 0, len(tokens)))
            consumed = window_frames
        segments = [
            Segment(
                id=0,
                seek=seek,
                start=time_offset + start,
                end=time_offset + end,
                text=self.tokenizer.decode([token for token in tokens[first:last] if token < self.end_of_text]),
                tokens=tokens[first:last],
                temperature=result.temperature,
                avg_logprob=result.avg_logprob,
                compression_ratio=result.compression_ratio,
                no_speech_prob=no_speech_prob,
                words=self.words(result, first, last, time_offset, language),
            )
            for start, end, first, last in pieces
        ]
        return segments, min(consumed, window_frames)

    def words(self, result: WindowResult, first: int, last: int, time_offset: float, language: str) -> list:
        if not result.token_spans:
            return []
        indexes = [index for index in range(first, last) if result.tokens[index] < self.end_of_text]
        spans = [
            (time_offset + result.token_spans[index][0], time_offset + result.token_spans[index][1])
            for index in indexes
        ]
        return group_words([result.tokens[index] for index in indexes], spans, self.tokenizer.decode, language)


def _renumbered(segment: Segment, number: int, duration: float, previous_end: float = 0.0) -> Segment:
    """Number the segment and keep it, and its words, inside the audio, after the segment before
    it (window offsets and timestamps add up with float rounding) and inside each other."""
    end = min(max(segment.end, previous_end), duration)
    start = min(max(segment.start, previous_end), end)
    words = [
        replace(word, start=min(max(word.start, start), end), end=min(max(word.end, start), end))
        for word in segment.words
    ]
    return replace(segment, id=number, start=start, end=end, words=words)
