"""The process-wide Whisper engine: device choice, loading once, the queue, transcribe(job)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .audio import decode
from .backlog import Backlog
from .cancellation import CLIENT_DISCONNECTED, JobCancelled
from .config import ModelSettings
from .devices import DeviceChoice, bfloat16_is_native, choose_device, dtype_problem, release_memory, resolve_dtype
from .inference.fallback import FallbackDecoder, QualityOptions
from .inference.clip import ClipDecoding
from .inference.long_form import SequentialStrategy, VadStrategy
from .inference.model import TORCH_DTYPES, LoadedModel, ModelLoadError
from .inference.vad import SpeechDetector, VadOptions
from .languages import UnsupportedLanguage, UnsupportedTask
from .model_queue import Cancelled, ModelQueue
from .model_source import resolve_model_path
from .scheduler import ScheduledDecoder
from .transcript import Transcript, TranscriptionJob

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineInfo", "ModelLoadError", "resolve_strategy", "default_batch_rows"]

ASSETS = Path(__file__).resolve().parent / "assets"
# (clip, language) the warm-up transcribes: Japanese, or English on an English-only model
WARMUP_CLIPS = {False: (ASSETS / "doctor_ja.ogg", "ja"), True: (ASSETS / "en_jfk.mp3", "en")}
# `[server] max_batch_rows = auto`: rows one decoding step takes, by device. A discrete GPU runs a
# step of 24 rows in about the time of one; a CPU shares reading the weights among 8; the 780M
# holds the batch's caches in memory Windows shares, so fewer.
DEFAULT_BATCH_ROWS = {"cuda": 24, "cpu": 8, "directml": 4}
# How long a stopping server waits for the model thread to end its current call (its jobs were
# cancelled: a decoding loop stops at its next step).
MODEL_STOP_SECONDS = 10.0


def default_batch_rows(device_kind: str) -> int:
    return DEFAULT_BATCH_ROWS.get(device_kind, 8)


@dataclass(frozen=True)
class EngineInfo:
    model: str
    device: str
    device_name: str
    device_reason: str
    dtype: str
    attention: str
    load_seconds: float
    strategy: str = "vad"
    english_only: bool = False  # an `.en` checkpoint: English only, no translation


def resolve_strategy(requested: str, device_kind: str) -> str:
    """`auto` is `vad` on every device: it never decodes silence and batches its chunks, which
    pays on a CPU as on a GPU (docs/long-audio.md)."""
    return "vad" if requested == "auto" else requested


def vad_options(settings: ModelSettings) -> VadOptions:
    return VadOptions(
        threshold=settings.vad_threshold, min_silence_ms=settings.vad_min_silence_ms,
        speech_pad_ms=settings.vad_speech_pad_ms, max_chunk_seconds=settings.vad_max_chunk_seconds,
    )


class Engine:
    """Owns the one model; `transcribe` runs a job through the model's scheduler, up to
    `max_concurrent_jobs` at once (the rest wait in arrival order)."""

    def __init__(self, settings: ModelSettings, device: DeviceChoice, model: LoadedModel, load_seconds: float,
                 max_queue: int = 8, detector: SpeechDetector | None = None, decoder: ScheduledDecoder | None = None,
                 max_concurrent_jobs: int = 1, max_batch_rows: int = 0) -> None:
        settings = replace(settings, dtype=resolve_dtype(settings.dtype, device.kind))
        max_batch_rows = max_batch_rows or settings.batch_size or default_batch_rows(device.kind)
        if not settings.batch_size:  # one job alone fills the batch
            settings = replace(settings, batch_size=max_batch_rows)
        self.settings = settings
        self.device = device
        self.model = model
        self.backlog = Backlog()
        self.queue = ModelQueue(max_queue, retry_after=self.backlog.retry_after, max_running=max_concurrent_jobs)
        # the one scheduler of this model: engines made by with_settings share it
        self.decoder = decoder or ScheduledDecoder(
            model, max_batch_rows, encoder_rows=1 if device.kind == "cpu" else max_batch_rows,
            release_memory=lambda: release_memory(device),
        )
        self.scheduler = self.decoder.scheduler
        self.detector = detector or SpeechDetector(vad_options(settings))
        if self.detector.options != vad_options(settings):
            self.detector = SpeechDetector(vad_options(settings))
        fallback = FallbackDecoder(self.decoder, QualityOptions(beam_size=settings.beam_size))
        clip = ClipDecoding(model, self.decoder, fallback, self.detector)
        self.strategy = resolve_strategy(settings.strategy, device.kind)
        self.long_form = VadStrategy(clip, settings.batch_size) if self.strategy == "vad" else SequentialStrategy(clip)
        self.info = EngineInfo(
            model=settings.name,
            device=device.kind,
            device_name=device.name,
            device_reason=device.describe(),
            dtype=settings.dtype,
            attention=model.attention,
            load_seconds=round(load_seconds, 2),
            strategy=self.strategy,
            english_only=model.english_only,
        )

    def with_settings(self, max_queue: int | None = None, max_concurrent_jobs: int | None = None,
                      **changes) -> "Engine":
        """Another engine over the same loaded model and scheduler (tests, benchmarks): other
        strategy, batch or beam size, queue length, jobs at once."""
        return Engine(replace(self.settings, **changes), self.device, self.model, self.info.load_seconds,
                      self.queue.max_waiting if max_queue is None else max_queue, self.detector, self.decoder,
                      self.queue.max_running if max_concurrent_jobs is None else max_concurrent_jobs)

    @classmethod
    def load(cls, settings: ModelSettings, max_queue: int = 8, max_concurrent_jobs: int = 1,
             max_batch_rows: int = 0) -> "Engine":
        """Choose the device and load the model onto it; raises DeviceUnavailable or ModelLoadError."""
        device = choose_device(settings.device)
        log.info("device: %s", device.describe())
        settings = replace(settings, dtype=resolve_dtype(settings.dtype, device.kind))
        problem = dtype_problem(device.kind, settings.dtype)
        if problem:
            raise ModelLoadError(problem)
        if settings.dtype == "bfloat16" and device.kind == "cpu" and not bfloat16_is_native():
            log.warning("this CPU has no bfloat16 instructions: dtype = bfloat16 runs slower than float32 here")
        started = time.perf_counter()
        path = resolve_model_path(settings.name)
        model = LoadedModel.load(path, device.device, TORCH_DTYPES[settings.dtype], settings.attention,
                                 int8_weights=settings.dtype == "int8")
        engine = cls(settings, device, model, time.perf_counter() - started, max_queue,
                     max_concurrent_jobs=max_concurrent_jobs, max_batch_rows=max_batch_rows)
        log.info("model %s loaded on %s (%s) in %.1f s", settings.name, device.kind, settings.dtype,
                 engine.info.load_seconds)
        if model.english_only:
            log.info("model %s is English-only: requests for other languages and translations get a 400",
                     settings.name)
        if settings.warmup:
            engine.warm_up()
        return engine

    @contextmanager
    def _turn(self, job: TranscriptionJob) -> Iterator[None]:
        """Hold the model for the job. From then on its progress says `running` (speech detection
        on a long file takes seconds before the first chunk is decoded)."""
        cancellation = job.cancellation
        try:
            with self.queue.turn(cancellation.is_cancelled if cancellation is not None else None):
                if cancellation is not None:
                    cancellation.running = True
                if job.on_start is not None:
                    job.on_start()
                yield
        except Cancelled:  # only the wait raises it: the decoding loop raises JobCancelled itself
            raise JobCancelled((cancellation and cancellation.reason) or CLIENT_DISCONNECTED) from None

    def close(self, timeout: float = MODEL_STOP_SECONDS) -> bool:
        """Stops the model thread once its current call ends (before the process exits); True once
        it has stopped."""
        return self.scheduler.close(timeout)

    @property
    def supported_languages(self) -> set[str]:
        return {"en"} if self.model.english_only else set(self.model.tokens.languages)

    def warm_up(self) -> None:
        """Transcribe a shipped clip on the path requests take, so that kernels are compiled and
        memory allocated before a user waits for them (silence would be skipped before the model
        ever ran): Japanese, or English on an English-only model."""
        started = time.perf_counter()
        clip, language = WARMUP_CLIPS[self.model.english_only]
        samples = decode(clip.read_bytes()).samples
        transcript = self.transcribe(TranscriptionJob(samples=samples, language=language))
        log.info("warm-up: %.1f s of speech transcribed in %.2f s (%d segments)", transcript.duration,
                 time.perf_counter() - started, len(transcript.segments))

    def transcribe(self, job: TranscriptionJob) -> Transcript:
        """Run one job through the scheduler; raises QueueFull at once when too many wait,
        JobCancelled when the job's cancellation turns true while it waits or between its model
        calls. A failure inside inference fails this job only: its rows leave the batch, device
        memory is freed, other jobs go on."""
        if job.language is not None and job.language not in self.supported_languages:
            raise UnsupportedLanguage(job.language, english_only=self.model.english_only)
        if job.task == "translate" and self.model.english_only:
            raise UnsupportedTask("translate")
        with self.backlog.job(job.duration) as backlog_entry, self._turn(job):
            backlog_entry.start()
            cancellation = job.cancellation
            with self.scheduler.job(
                cancelled=cancellation.is_cancelled if cancellation is not None else None,
                max_rows=self.settings.batch_size,
                cancelled_error=lambda: JobCancelled((cancellation and cancellation.reason) or CLIENT_DISCONNECTED),
            ) as handle:
                try:
                    # no_grad, not PyTorch's inference mode: torch-directml cannot move tensors to its
                    # device in inference mode ("Cannot set version_counter for inference tensor")
                    with torch.no_grad():
                        language, segments = self.long_form.transcribe(job)
                except BaseException:
                    release_memory(self.device)
                    raise
        text = "".join(segment.text for segment in segments).strip()
        return Transcript(
            task=job.task,
            language="en" if job.task == "translate" else language,
            duration=job.duration,
            text=text,
            segments=segments,
            words=[word for segment in segments for word in segment.words] if job.word_timestamps else None,
            logprobs=[entry for segment in segments for entry in segment.logprobs or []] if job.logprobs else None,
            model_seconds=handle.model_seconds,
        )
