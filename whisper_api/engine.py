"""The process-wide Whisper pipeline: device choice, loading once, the lock, transcribe(job)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .chunked import ChunkedDecoder, ChunkedOptions
from .config import ModelSettings
from .decoding import DecodingOptions, SequentialDecoder
from .devices import DeviceChoice, bfloat16_is_native, choose_device, dtype_problem, release_memory, resolve_dtype
from .languages import UnsupportedLanguage
from .model_queue import ModelQueue
from .model_source import resolve_model_path
from .transcript import Transcript, TranscriptionJob

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


SAMPLING_SEED = 0


class ModelLoadError(RuntimeError):
    """The model could not be loaded (missing, not a Whisper checkpoint, no memory)."""


@dataclass(frozen=True)
class EngineInfo:
    model: str
    device: str
    device_name: str
    device_reason: str
    dtype: str
    attention: str
    load_seconds: float
    strategy: str = "sequential"


def resolve_strategy(requested: str, device_kind: str) -> str:
    """`auto` is chunked on a GPU and sequential on the CPU (docs/long-audio.md says why).

    A GPU decodes a batch of windows in about the time of one, so batching pays; a CPU's cores
    are already busy with one window, so it gains little and would lose the sequential
    algorithm's conditioning on the previous text.
    """
    if requested != "auto":
        return requested
    return "sequential" if device_kind == "cpu" else "chunked"


class Engine:
    """Owns the one pipeline; `transcribe` runs one job at a time under a lock."""

    def __init__(
        self, settings: ModelSettings, device: DeviceChoice, pipeline, load_seconds: float, max_queue: int = 8
    ) -> None:
        settings = replace(settings, dtype=resolve_dtype(settings.dtype, device.kind))
        self.settings = settings
        self.device = device
        self.pipeline = pipeline
        self.dtype = TORCH_DTYPES[settings.dtype]
        self.queue = ModelQueue(max_queue)
        self.decoder = SequentialDecoder(
            pipeline.model,
            pipeline.feature_extractor,
            pipeline.tokenizer,
            device.device,
            self.dtype,
            DecodingOptions(beam_size=settings.beam_size),
        )
        self.strategy = resolve_strategy(settings.strategy, device.kind)
        self.long_form: SequentialDecoder | ChunkedDecoder = self.decoder
        if self.strategy == "chunked":
            self.long_form = ChunkedDecoder(self.decoder, ChunkedOptions(batch_size=settings.batch_size))
        self.info = EngineInfo(
            model=settings.name,
            device=device.kind,
            device_name=device.name,
            device_reason=device.describe(),
            dtype=settings.dtype,
            attention=settings.attention,
            load_seconds=round(load_seconds, 2),
            strategy=self.strategy,
        )

    @classmethod
    def load(cls, settings: ModelSettings, max_queue: int = 8) -> "Engine":
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
        pipeline = load_pipeline(settings, device)
        engine = cls(settings, device, pipeline, time.perf_counter() - started, max_queue)
        log.info("model %s loaded on %s (%s) in %.1f s", settings.name, device.kind, settings.dtype,
                 engine.info.load_seconds)
        if settings.warmup:
            engine.warm_up()
        return engine

    @property
    def supported_languages(self) -> set[str]:
        return set(self.decoder.language_ids)

    def warm_up(self) -> None:
        """Run one second of silence through the model so the first request is not the slow one."""
        started = time.perf_counter()
        self.transcribe(TranscriptionJob(samples=np.zeros(SAMPLE_RATE, dtype=np.float32), language="en"))
        log.info("warm-up took %.2f s", time.perf_counter() - started)

    def transcribe(self, job: TranscriptionJob, cancelled: Callable[[], bool] | None = None) -> Transcript:
        """Run one job on the model; raises QueueFull at once when too many wait, Cancelled when
        `cancelled()` turns true while waiting. A failure inside inference frees device memory and
        leaves the model ready for the next job."""
        if job.language is not None and job.language not in self.supported_languages:
            raise UnsupportedLanguage(job.language)
        with self.queue.turn(cancelled):
            # temperature fallback samples: the same request gets the same answer
            torch.manual_seed(SAMPLING_SEED)
            try:
                with torch.inference_mode():
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
        )


def load_pipeline(settings: ModelSettings, device: DeviceChoice):
    """transformers' ASR pipeline, the model in the configured dtype and attention, on the device."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor, pipeline
    from transformers.utils import logging as transformers_logging

    # generate() warns on every call about settings we pass on purpose; keep the log readable
    transformers_logging.set_verbosity_error()

    dtype = TORCH_DTYPES[settings.dtype]
    path = resolve_model_path(settings.name)
    try:
        processor = WhisperProcessor.from_pretrained(path)
        model = WhisperForConditionalGeneration.from_pretrained(
            path, dtype=dtype, attn_implementation=settings.attention, low_cpu_mem_usage=True
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load model {settings.name!r}: {error}") from None
    model.to(device.device)
    model.eval()
    return pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=processor.tokenizer,
        feature_extractor=processor.feature_extractor,
        device=device.device,
        dtype=dtype,
    )
