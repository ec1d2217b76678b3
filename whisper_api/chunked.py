"""Chunked long-form decoding: fixed 30 s windows with overlap, decoded `batch_size` at a time.

The sequential algorithm must finish one window before it knows where the next one starts, so
a GPU decodes one sequence at a time and spends most of its time launching small kernels.
Here every window's position is known up front: windows are encoded and decoded in batches,
then stitched where they overlap. What it gives up: no conditioning on the previous window's
text, and a cut between windows decided by timestamps rather than by where speech stopped.
Each window still gets the sequential decoder's safeguards: silent windows are skipped,
no-speech windows dropped, looping or unsure windows re-decoded alone with temperature fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .decoding import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    INPUT_STRIDE,
    MAX_NEW_TOKENS,
    TIME_PRECISION,
    WINDOW_FRAMES,
    SequentialDecoder,
    WindowResult,
    compression_ratio,
)
from .repetition import trim_repetition
from .transcript import Segment, TranscriptionJob

# A stretch of text that starts this far into the next window is left to that window, which
# hears it with context on both sides; earlier ones are taken from the window that holds them.
HANDOVER_MARGIN_SECONDS = 1.0
OVERLAP_SEARCH_TOKENS = 48  # how far back/forward a re-heard phrase is looked for at a seam
MIN_OVERLAP_TOKENS = 3
SAME_TIME_SECONDS = 0.1


@dataclass(frozen=True)
class ChunkedOptions:
    batch_size: int = 8
    overlap_seconds: float = 5.0  # 30 s windows start every 25 s
    temperature_fallback: bool = True
    # Benchmarks only: decode exactly this many tokens per window, as the peer is made to.
    forced_new_tokens: int | None = None


@dataclass(frozen=True)
class Window:
    start_frame: int
    frames: int  # mel frames of audio in the window (the last one may be shorter than 30 s)

    @property
    def start(self) -> float:
        return self.start_frame / FRAMES_PER_SECOND

    @property
    def end(self) -> float:
        return (self.start_frame + self.frames) / FRAMES_PER_SECOND


@dataclass(frozen=True)
class Piece:
    """Text between two timestamps of one window, in seconds of the whole audio."""

    start: float
    end: float
    tokens: list[int]  # text tokens only
    source: int  # position of its window in the decoded list


@dataclass(frozen=True)
class DecodedWindow:
    window: Window
    result: WindowResult
    no_speech_prob: float


def plan_windows(content_frames: int, overlap_frames: int) -> list[Window]:
    """30 s windows every (30 s - overlap) while a window still brings audio the one before did
    not hear. The last one is padded with silence like the sequential loop's last window:
    Whisper leaves out speech that runs up to a window's edge, expecting the next window."""
    step = WINDOW_FRAMES - overlap_frames
    starts = [0]
    while starts[-1] + WINDOW_FRAMES < content_frames:
        starts.append(starts[-1] + step)
    return [Window(start, min(WINDOW_FRAMES, content_frames - start)) for start in starts]


class ChunkedDecoder:
    """Transcribes one job in batched windows; not thread-safe (the engine's lock guards it)."""

    def __init__(self, sequential: SequentialDecoder, options: ChunkedOptions) -> None:
        self.sequential = sequential
        self.options = options
        self.model = sequential.model
        self.tokenizer = sequential.tokenizer
        self.device = sequential.device
        self.dtype = sequential.dtype
        self.end_of_text = sequential.end_of_text
        self.timestamp_begin = sequential.timestamp_begin

    @property
    def language_ids(self) -> dict[str, int]:
        return self.sequential.language_ids

    @torch.inference_mode()
    def transcribe(self, job: TranscriptionJob) -> tuple[str, list[Segment]]:
        """Returns the language code used and the segments, in order."""
        if job.word_timestamps:
            return self.sequential.transcribe(job)  # word alignment lives in the sequential loop
        content_frames = len(job.samples) // HOP_LENGTH
        windows = plan_windows(content_frames, round(self.options.overlap_seconds * FRAMES_PER_SECOND))
        audible = [
            window for window in windows
            if not self.sequential.is_quiet(job.samples[window.start_frame * HOP_LENGTH : int(window.end * SAMPLE_RATE)])
        ]
        if not audible:
            return job.language or "en", []
        if job.on_progress:
            job.on_progress(0, len(audible))
        mel = self.log_mel(job.samples)
        prompt = self.sequential.text_tokens(" " + job.prompt.strip()) if job.prompt else []
        language, decoded = self.decode_windows(audible, mel, job, job.language, prompt)
        resumed = self.resumed_windows(decoded, windows, content_frames, job.samples)
        if resumed:
            language, more = self.decode_windows(resumed, mel, job, language, prompt)
            decoded = sorted(decoded + more, key=lambda item: item.window.start_frame)
        return language or "en", self.segments(stitch(decoded, self.window_pieces), decoded, job.duration)

    def decode_windows(
        self, windows: list[Window], mel: torch.Tensor, job: TranscriptionJob, language: str | None, prompt: list[int]
    ) -> tuple[str | None, list[DecodedWindow]]:
        """Encode and decode the windows `batch_size` at a time; silent ones are left out."""
        decoded: list[DecodedWindow] = []
        for first in range(0, len(windows), self.options.batch_size):
            batch = windows[first : first + self.options.batch_size]
            features = torch.stack([mel[:, window.start_frame : window.start_frame + WINDOW_FRAMES] for window in batch])
            encoded = self.sequential.encode(features)
            probabilities = self.first_step_probabilities(encoded)
            if language is None:
                language = self.sequential.detect_language(probabilities[0])
            results = self.decode_batch(encoded, language, job.task, prompt, job.temperature)
            for row, (window, result) in enumerate(zip(batch, results)):
                no_speech_prob = float(probabilities[row, self.sequential.no_speech])
                if self.needs_fallback(result, no_speech_prob, job.temperature):
                    result = self.sequential.decode_window(
                        encoded[row : row + 1], language, job.task, prompt, job.temperature, no_speech_prob
                    )
                if self.sequential.is_silence(no_speech_prob, result, job.temperature):
                    continue  # silence: skip it rather than invent text
                tokens = trim_repetition(result.tokens, self.end_of_text)
                decoded.append(DecodedWindow(window, replace(result, tokens=tokens), no_speech_prob))
            if job.on_progress:
                job.on_progress(first + len(batch), len(windows))
        return language, decoded

    def resumed_windows(
        self, decoded: list[DecodedWindow], planned: list[Window], content_frames: int, samples: np.ndarray
    ) -> list[Window]:
        """Windows that start where a decoded window stopped short of audio no other window covers.

        Whisper may end a window at a segment boundary well before its end (it closes with two
        timestamps), leaving the speech after it to "the next window", as the sequential loop would
        start there. When the next planned window starts too late to hear that speech, a window
        starting at that boundary is decoded as well, in one more batch.
        """
        resumed: list[Window] = []
        for item in decoded:
            tokens = item.result.tokens
            if len(tokens) < 2 or tokens[-1] < self.timestamp_begin or tokens[-2] < self.timestamp_begin:
                continue  # text runs to the edge, or a single closing timestamp: nothing left unheard
            start_frame = item.window.start_frame + (tokens[-1] - self.timestamp_begin) * INPUT_STRIDE
            later = [window.start_frame for window in planned if window.start_frame > item.window.start_frame]
            covered_from = later[0] + HANDOVER_MARGIN_SECONDS * FRAMES_PER_SECOND if later else content_frames
            if covered_from - start_frame < FRAMES_PER_SECOND:
                continue
            if self.sequential.is_quiet(samples[start_frame * HOP_LENGTH : int(covered_from) * HOP_LENGTH]):
                continue
            resumed.append(Window(start_frame, min(WINDOW_FRAMES, content_frames - start_frame)))
        return resumed

    def log_mel(self, samples: np.ndarray) -> torch.Tensor:
        """Log-mel of the whole clip plus 30 s of silence, (mel bins, frames); on CUDA the STFT runs
        on the GPU (the CPU STFT of an hour of audio takes seconds)."""
        padded = np.concatenate([samples, np.zeros(WINDOW_FRAMES * HOP_LENGTH, dtype=np.float32)])
        device = "cuda" if self.device.type == "cuda" else "cpu"
        features = self.sequential.feature_extractor(
            padded, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="longest", truncation=False,
            device=device,
        ).input_features
        return features[0]

    def first_step_probabilities(self, encoded: torch.Tensor) -> torch.Tensor:
        """Per window, probabilities of the token after <|startoftranscript|>: languages, no-speech."""
        start = torch.full((encoded.shape[0], 1), self.sequential.start_of_transcript, device=self.device)
        hidden = self.model.model.decoder(input_ids=start, encoder_hidden_states=encoded).last_hidden_state
        return self.model.proj_out(hidden[:, -1]).float().softmax(dim=-1).cpu()

    def decode_batch(
        self, encoded: torch.Tensor, language: str, task: str, prompt: list[int], temperature: float
    ) -> list[WindowResult]:
        arguments = self.sequential.generate_arguments(
            encoded, language, task, prompt, temperature, self.options.forced_new_tokens or MAX_NEW_TOKENS
        )
        if self.options.forced_new_tokens:
            arguments["min_new_tokens"] = self.options.forced_new_tokens
        sequences = self.model.generate(**arguments)
        if not isinstance(sequences, torch.Tensor):
            sequences = sequences["sequences"]
        return self.score(encoded, sequences, temperature)

    def score(self, encoded: torch.Tensor, sequences: torch.Tensor, temperature: float) -> list[WindowResult]:
        """Each window's tokens with openai/whisper's average log probability and compression ratio.

        The log probabilities come from one teacher-forced decoder pass over the batch (generate
        would otherwise have to keep every step's full-vocabulary scores). Timestamp tokens are left
        out of the average: generate forces many of them, which the raw distribution rates low.
        """
        hidden = self.model.model.decoder(input_ids=sequences[:, :-1], encoder_hidden_states=encoded).last_hidden_state
        rows = sequences.tolist()
        results: list[WindowResult] = []
        for row_index, row in enumerate(rows):
            first = row.index(self.sequential.start_of_transcript) + 3 if self.sequential.start_of_transcript in row else 0
            generated = row[first:]
            length = generated.index(self.end_of_text) if self.end_of_text in generated else len(generated)
            tokens = generated[:length]
            # score the text tokens and the end of text, as openai/whisper counts it
            scored = [first + index for index, token in enumerate(generated[: length + 1]) if token <= self.end_of_text]
            avg_logprob = 0.0
            if scored:
                logits = self.model.proj_out(hidden[row_index, [position - 1 for position in scored]]).float()
                targets = torch.tensor([row[position] for position in scored], device=logits.device)
                avg_logprob = float(logits.log_softmax(dim=-1).gather(1, targets[:, None]).mean())
            text = self.tokenizer.decode([token for token in tokens if token < self.end_of_text])
            results.append(WindowResult(tokens, temperature, avg_logprob, compression_ratio(text)))
        return results

    def needs_fallback(self, result: WindowResult, no_speech_prob: float, requested_temperature: float) -> bool:
        if not self.options.temperature_fallback or self.sequential.is_silence(
            no_speech_prob, result, requested_temperature
        ):
            return False
        options = self.sequential.options
        return result.compression_ratio > options.compression_ratio_threshold or result.avg_logprob < options.logprob_threshold

    def window_pieces(self, decoded: DecodedWindow, position: int) -> list[Piece]:
        """Cut a window's tokens at its timestamps; text after the last one runs to the window's end."""
        window = decoded.window
        pieces: list[Piece] = []
        start: float | None = None
        text: list[int] = []
        for token in decoded.result.tokens:
            if token >= self.timestamp_begin:
                time = window.start + (token - self.timestamp_begin) * TIME_PRECISION
                if text:
                    pieces.append(Piece(window.start if start is None else start, min(time, window.end), text, position))
                    text, start = [], None
                else:
                    start = min(time, window.end)
            elif token < self.end_of_text:
                text.append(token)
        if text:
            pieces.append(Piece(window.start if start is None else start, window.end, text, position))
        return pieces

    def segments(self, pieces: list[Piece], decoded: list[DecodedWindow], duration: float) -> list[Segment]:
        segments: list[Segment] = []
        previous_end = 0.0
        for piece in pieces:
            tokens = self.whole_characters(piece.tokens)
            text = self.tokenizer.decode(tokens)
            if not text.strip():
                continue
            source = decoded[piece.source]
            end = min(max(piece.end, previous_end), duration)
            start = min(max(piece.start, previous_end), end)
            segments.append(Segment(
                id=len(segments),
                seek=source.window.start_frame,
                start=start,
                end=end,
                text=text,
                tokens=tokens,
                temperature=source.result.temperature,
                avg_logprob=source.result.avg_logprob,
                compression_ratio=source.result.compression_ratio,
                no_speech_prob=source.no_speech_prob,
            ))
            previous_end = end
        return segments

    def whole_characters(self, tokens: list[int]) -> list[int]:
        """Drop byte tokens cut off from their character at a seam (a kanji spans several tokens)."""
        while tokens and self.tokenizer.decode(tokens[:1]).startswith("\ufffd") and self.tokenizer.decode(tokens).startswith("\ufffd"):
            tokens = tokens[1:]
        while tokens and self.tokenizer.decode(tokens).endswith("\ufffd"):
            tokens = tokens[:-1]
        return tokens


def stitch(decoded: list[DecodedWindow], window_pieces) -> list[Piece]:
    """Join the windows' pieces in time order, each stretch of speech taken once.

    A piece starting in the overlap with the next decoded window is left to that window; a piece
    that reaches back over text already taken loses the tokens it repeats, found by matching the
    text at the seam, or is dropped when no text matches and most of it lies in the past.
    """
    taken: list[Piece] = []
    for position, item in enumerate(decoded):
        handover = float("inf")
        if position + 1 < len(decoded) and decoded[position + 1].window.start < item.window.end:
            handover = decoded[position + 1].window.start + HANDOVER_MARGIN_SECONDS
        for piece in window_pieces(item, position):
            if piece.start >= handover:
                break
            piece = without_repeated_head(taken, piece)
            if piece is not None:
                taken.append(piece)
    return taken


def without_repeated_head(taken: list[Piece], piece: Piece) -> Piece | None:
    if not taken:
        return piece
    last_end = taken[-1].end
    if piece.end <= last_end + SAME_TIME_SECONDS:
        return None  # heard already
    if piece.start >= last_end - SAME_TIME_SECONDS:
        return piece
    tail = [token for earlier in taken[-4:] for token in earlier.tokens][-OVERLAP_SEARCH_TOKENS:]
    # the repeat can only cover the part of the piece that lies before last_end (plus slack)
    share = (last_end - piece.start) / max(piece.end - piece.start, SAME_TIME_SECONDS)
    reach = min(OVERLAP_SEARCH_TOKENS, round(len(piece.tokens) * share * 1.5) + MIN_OVERLAP_TOKENS)
    repeated = repeated_head_length(tail, piece.tokens[:reach])
    if repeated:
        tokens = piece.tokens[repeated:]
    elif (piece.start + piece.end) / 2 > last_end:
        tokens = piece.tokens  # mostly new: keep it, moved to start where the taken text ends
    else:
        return None
    return replace(piece, start=last_end, tokens=tokens) if tokens else None


def repeated_head_length(tail: list[int], head: list[int]) -> int:
    """How many leading tokens of `head` end with a run that also ends `tail` (its last words
    heard again), at least MIN_OVERLAP_TOKENS long; 0 when there is none."""
    best = 0
    for end in range(MIN_OVERLAP_TOKENS, len(head) + 1):
        # longest run ending at head[end - 1] that equals the end of tail, allowing the last
        # token of tail to differ (the earlier window may have cut that word short)
        for skip in (0, 1):
            available = len(tail) - skip
            length = 0
            while length < min(end, available) and head[end - 1 - length] == tail[available - 1 - length]:
                length += 1
            if length >= MIN_OVERLAP_TOKENS:
                best = end
    return best
