"""GPU speed: our default strategy against the plain transformers pipeline, same GPU, same audio.

Speed only: the models are the real Whisper architectures (base, large-v3-turbo) with random
weights, so nothing has to be downloaded or carried, and both sides are made to generate the
same number of tokens per window (`min_new_tokens = max_new_tokens`), since a random model
would otherwise stop at any length. The peer is the pipeline as users script it:
`chunk_length_s=30`, `batch_size`, float16, sdpa. Counts of decoder rows (one per token and
window) are printed for both sides, so that equal work can be checked rather than assumed.
Synthetic audio holds no speech: our side is given a speech detector that hears speech
everywhere, so that the clip is cut into 30 s chunks like the pipeline's. Also printed: our
decoding loop's milliseconds per step at batch 1 and at the batch size, and its encoder time.

    python -m bench.gpu_compare --config-dir DIR [--minutes 10] [--batch-size 16] [--tokens 128]

DIR holds a Whisper checkpoint's config, tokenizer and preprocessor files (no weights needed).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.report import write_report  # noqa: E402
from whisper_api.audio import SAMPLE_RATE
from whisper_api.inference.chunks import plan_chunks
from whisper_api.inference.clip import ClipDecoding
from whisper_api.inference.decoder import Decoder, DecodingRequest
from whisper_api.inference.fallback import FallbackDecoder, QualityOptions
from whisper_api.inference.long_form import VadStrategy
from whisper_api.inference.model import TORCH_DTYPES, LoadedModel
from whisper_api.inference.vad import SpeechDetector, VadOptions
from whisper_api.transcript import TranscriptionJob

# large-v3-turbo's dimensions (openai/whisper-large-v3-turbo config.json). The vocabulary stays
# base's 51865 (turbo has 51866) so that both sides share base's tokenizer: one row of 51865.
TURBO_DIMENSIONS = dict(
    d_model=1280, encoder_layers=32, decoder_layers=4, encoder_attention_heads=20, decoder_attention_heads=20,
    encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
)


@dataclass
class Measurement:
    name: str
    seconds: list[float] = field(default_factory=list)
    decoder_rows: int = 0
    peak_gib: float = 0.0
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


class DecoderRowCounter:
    """Counts decoder rows of single-token steps (one per token generated per window), the
    work that forcing the token count makes equal."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.rows = 0
        decoder.register_forward_hook(self.count)

    def count(self, module, arguments, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        if hidden.shape[1] == 1:  # one new token per row; prompts and our scoring pass are not counted
            self.rows += hidden.shape[0]


class EverythingIsSpeech(SpeechDetector):
    """Synthetic audio has no speech: every frame is speech, so chunks are cut every 30 s."""

    def __init__(self) -> None:
        self.options = VadOptions()

    def frame_probabilities(self, samples: np.ndarray, cancellation=None) -> np.ndarray:
        return np.ones(-(-len(samples) // 512), dtype=np.float32)


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (smoke test)"


def synthetic_audio(minutes: float, seed: int = 0) -> np.ndarray:
    """Tones and noise at about -20 dBFS: loud enough that no window is skipped as silence."""
    generator = np.random.default_rng(seed)
    seconds = np.arange(round(minutes * 60 * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 200 + 150 * np.sin(2 * np.pi * seconds / 7.0)
    samples = 0.07 * np.sin(2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE) + 0.03 * generator.standard_normal(len(seconds))
    return samples.astype(np.float32)


def build_pipeline(size: str, config_dir: Path, device: torch.device, dtype: torch.dtype):
    from transformers import (
        GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
        WhisperTokenizerFast, pipeline,
    )

    config = WhisperConfig.from_pretrained(config_dir)
    if size == "large-v3-turbo":
        for key, value in TURBO_DIMENSIONS.items():
            setattr(config, key, value)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=dtype)
    model.generation_config = GenerationConfig.from_pretrained(config_dir)
    model.to(device).eval()
    feature_extractor = WhisperFeatureExtractor.from_pretrained(config_dir, feature_size=config.num_mel_bins)
    tokenizer = WhisperTokenizerFast.from_pretrained(config_dir)
    return pipeline(
        "automatic-speech-recognition", model=model, tokenizer=tokenizer, feature_extractor=feature_extractor,
        device=device, dtype=dtype,
    )


def timed(measurement: Measurement, counter: DecoderRowCounter, run, repeats: int):
    """One untimed warm-up, then `repeats` timed runs; returns the last result."""
    on_gpu = torch.cuda.is_available()
    result = run()
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        counter.rows = 0
        started = time.perf_counter()
        result = run()
        if on_gpu:
            torch.cuda.synchronize()
        measurement.seconds.append(time.perf_counter() - started)
        measurement.decoder_rows = counter.rows
    measurement.peak_gib = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0
    return result


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def decoding_step_milliseconds(decoder: Decoder, model: LoadedModel, rows: int, tokens: int) -> tuple[float, float]:
    """(encoder seconds for `rows` chunks, decoding milliseconds per step at `rows` rows): the
    median of three, after a warm-up; the step time is the loop's time over `tokens` steps,
    without the prefix pass (the same call with one token)."""
    mel = torch.zeros((rows, model.model.config.num_mel_bins, 3000))
    prefix = (model.tokens.start_of_transcript, model.tokens.languages["ja"], model.tokens.transcribe)

    def timed_call(function) -> float:
        function()
        synchronize()
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            function()
            synchronize()
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    with torch.no_grad():
        encoder = timed_call(lambda: model.encode(mel))
        encoded = model.encode(mel)
        frames = [3000] * rows
        whole = timed_call(lambda: decoder.decode(encoded, DecodingRequest(prefix, max_new_tokens=tokens, min_new_tokens=tokens), frames))
        first = timed_call(lambda: decoder.decode(encoded, DecodingRequest(prefix, max_new_tokens=1, min_new_tokens=1), frames))
    return encoder, (whole - first) / (tokens - 1) * 1000


def graphs_match_eager(model: LoadedModel, decoder: Decoder, rows: int, tokens: int) -> str:
    """Greedy decoding replayed as CUDA graphs gives the tokens the same loop gives eagerly."""
    if not decoder.cuda_graphs:
        return "CUDA graphs: not used on this device"
    eager = Decoder.__new__(Decoder)
    eager.__dict__.update(decoder.__dict__, cuda_graphs=False)
    generator = torch.Generator().manual_seed(1)
    mel = torch.randn((rows, model.model.config.num_mel_bins, 3000), generator=generator)
    prefix = (model.tokens.start_of_transcript, model.tokens.languages["ja"], model.tokens.transcribe)
    with torch.no_grad():
        encoded = model.encode(mel)
        graphed = decoder.decode(encoded, DecodingRequest(prefix, max_new_tokens=tokens), [3000] * rows)
        plain = eager.decode(encoded, DecodingRequest(prefix, max_new_tokens=tokens), [3000] * rows)
    same = sum(a.tokens == b.tokens for a, b in zip(graphed, plain))
    close = max(abs(a.avg_logprob - b.avg_logprob) for a, b in zip(graphed, plain))
    return f"CUDA graphs against the eager loop: {same}/{rows} rows with the same tokens, avg_logprob within {close:.2e}"


def compare(size: str, arguments: argparse.Namespace, audio: np.ndarray) -> tuple[list[Measurement], list[str]]:
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    dtype = "float16" if device.type == "cuda" else "float32"  # the CPU run is a smoke test only
    asr = build_pipeline(size, arguments.config_dir, device, TORCH_DTYPES[dtype])
    counter = DecoderRowCounter(asr.model.model.decoder)
    duration = len(audio) / SAMPLE_RATE
    model = LoadedModel(f"random-{size}", asr.model, asr.tokenizer, asr.feature_extractor, device, TORCH_DTYPES[dtype])
    decoder = Decoder(model)
    tokens = arguments.tokens
    # a random model is never sure of itself: no fallback, no silence, exactly `tokens` per chunk
    quality = QualityOptions(beam_size=arguments.beam_size, logprob_threshold=float("-inf"),
                             compression_ratio_threshold=float("inf"), no_speech_threshold=1.0,
                             forced_new_tokens=tokens)
    clip = ClipDecoding(model, decoder, FallbackDecoder(decoder, quality), EverythingIsSpeech())
    strategy = VadStrategy(clip, arguments.batch_size, cover_speech=False)  # the same work as the peer
    forced = dict(min_new_tokens=tokens, max_new_tokens=tokens)
    results: list[Measurement] = []

    def ours():
        with torch.no_grad():
            return strategy.transcribe(TranscriptionJob(samples=audio, language="ja"))

    measurement = Measurement("ours, vad (default)")
    language, segments = timed(measurement, counter, ours, arguments.repeats)
    probabilities = clip.detector.frame_probabilities(audio)
    chunks = plan_chunks(clip.detector.regions(audio, probabilities), probabilities, duration, clip.detector.options)
    measurement.decoder_rows = len(chunks) * (tokens - 1)  # steps after the prefix pass, as counted for the peer
    ordered = all(a.end <= b.start for a, b in zip(segments, segments[1:]))
    inside = all(0 <= s.start <= s.end <= duration for s in segments)
    measurement.note = f"{len(segments)} segments, in order: {ordered}, inside the audio: {inside}"
    results.append(measurement)

    for unique in (False, True):
        # the pipeline's own default is 5 beams when the checkpoint's generation config names
        # none (openai's do not); both sides get the same beam size
        generate_arguments = dict(language="ja", task="transcribe", num_beams=arguments.beam_size, **forced)
        name = "pipeline, chunk_length_s=30"
        if unique:
            # without it, 4.57's generate re-decodes each chunk from its last timestamp on
            generate_arguments["force_unique_generate_call"] = True
            name += ", one generate pass per chunk"
        measurement = Measurement(name)
        output = timed(
            measurement, counter,
            lambda: asr(
                {"raw": audio, "sampling_rate": SAMPLE_RATE}, chunk_length_s=30, batch_size=arguments.batch_size,
                return_timestamps=True, generate_kwargs=generate_arguments,
            ),
            arguments.repeats,
        )
        measurement.note = f"{len(output.get('chunks', []))} chunks"
        results.append(measurement)
    steps = [graphs_match_eager(model, decoder, arguments.batch_size, tokens)]
    for rows in (1, arguments.batch_size):
        encoder, step = decoding_step_milliseconds(decoder, model, rows, tokens)
        steps.append(f"{size}: batch {rows}: encoder {encoder * 1000:.1f} ms for {rows} chunks, decoding {step:.2f} ms per step")
    del strategy, clip, decoder, model, asr
    torch.cuda.empty_cache()
    return results, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", type=Path, required=True)
    parser.add_argument("--sizes", default="base,large-v3-turbo")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per window, both sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("bench/results/gpu.md"))
    arguments = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    audio = synthetic_audio(arguments.minutes)
    lines = [
        f"GPU: {device_name()}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
        f"transformers {__import__('transformers').__version__}; Python {platform.python_version()}",
        f"audio: {arguments.minutes:g} min synthetic; float16, sdpa, batch_size {arguments.batch_size}, "
        f"beam size {arguments.beam_size}, {arguments.tokens} tokens forced per window; median of {arguments.repeats} after one warm-up",
        "",
        "| model size | side | median s | runs s | RTF | decoder rows | peak GPU GiB | ours/theirs speed | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    duration = arguments.minutes * 60
    step_lines: list[str] = []
    for size in arguments.sizes.split(","):
        results, steps = compare(size, arguments, audio)
        step_lines += steps
        peers = [result for result in results if result.name.startswith("pipeline")]
        for result in results:
            speed = ""
            if result.name.startswith("ours"):
                speed = " / ".join(f"{peer.median / result.median:.2f}" for peer in peers)
            runs = ", ".join(f"{seconds:.2f}" for seconds in result.seconds)
            lines.append(
                f"| {size} | {result.name} | {result.median:.2f} | {runs} | {result.median / duration:.4f} | "
                f"{result.decoder_rows} | {result.peak_gib:.2f} | {speed} | {result.note} |"
            )
        print("\n".join(lines[-len(results):]), flush=True)
    lines.append("")
    lines += [f"- {line}" for line in step_lines]
    lines.append("")
    lines.append("ours/theirs speed: the pipeline's median time over ours, against each pipeline row in turn (>= 1: ours is not slower).")
    write_report("\n".join(lines), arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
