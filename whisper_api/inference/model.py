"""The model on its device: weights, tokenizer, feature extractor and the special tokens; nothing else."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .encoder import AudioEncoder
from .quantization import quantize_model

SAMPLE_RATE = 16000
HOP_LENGTH = 160
N_FFT = 400
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames a second
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
WINDOW_FRAMES = WINDOW_SECONDS * FRAMES_PER_SECOND
INPUT_STRIDE = 2  # mel frames per encoder position
TIME_PRECISION = 0.02  # seconds per timestamp token and per encoder position

# `[model] dtype` -> the dtype activations are computed in; `int8` keeps float32 activations
# (and embeddings, norms, convolutions) around int8 projection weights (quantization.py).
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.float32}

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model could not be loaded (missing, not a Whisper checkpoint, no memory)."""


@dataclass(frozen=True)
class SpecialTokens:
    start_of_transcript: int
    end_of_text: int
    no_timestamps: int
    timestamp_begin: int
    no_speech: int
    start_of_previous: int
    # None on an English-only model (tiny.en ... medium.en, distil .en): its transcript opens with
    # <|startoftranscript|> alone, with no language or task token (openai/whisper's sot_sequence)
    transcribe: int | None
    translate: int | None
    languages: dict[str, int]  # Whisper code -> token; empty on an English-only model

    @property
    def multilingual(self) -> bool:
        return bool(self.languages)

    @classmethod
    def from_generation_config(cls, config) -> "SpecialTokens":
        """The special tokens a checkpoint's generation_config.json names; ModelLoadError naming
        the first missing entry."""

        def entry(name: str):
            value = getattr(config, name, None)
            if value is None:
                raise ModelLoadError(f"generation_config.json has no {name}: not a complete Whisper checkpoint")
            return value

        no_timestamps = entry("no_timestamps_token_id")
        common = dict(
            start_of_transcript=entry("decoder_start_token_id"), end_of_text=entry("eos_token_id"),
            no_timestamps=no_timestamps, timestamp_begin=no_timestamps + 1, no_speech=no_timestamps - 1,
            start_of_previous=entry("prev_sot_token_id"),
        )
        if not is_multilingual(config):
            return cls(**common, transcribe=None, translate=None, languages={})
        task_ids = entry("task_to_id")
        return cls(
            **common, transcribe=task_ids["transcribe"], translate=task_ids["translate"],
            languages={code.strip("<|>"): token for code, token in entry("lang_to_id").items()},
        )

    def transcript_start(self, language: str, task: str) -> tuple[int, ...]:
        """The tokens that open a transcript: <|startoftranscript|>, then the language and the
        task where the model has them."""
        if not self.multilingual:
            return (self.start_of_transcript,)
        return (self.start_of_transcript, self.languages[language],
                self.translate if task == "translate" else self.transcribe)


def is_multilingual(config) -> bool:
    """transformers' own flag where the checkpoint has it; else whether it names languages."""
    flag = getattr(config, "is_multilingual", None)
    return bool(flag) if flag is not None else bool(getattr(config, "lang_to_id", None))


def alignment_heads(model_config, configured) -> tuple[tuple[int, int], ...]:
    """The (layer, head) pairs word times are read from: the checkpoint's own, or openai/whisper's
    default (every head of the last half of the decoder's layers) where it names none or names
    heads this model does not have. A distilled model (distil-whisper, kotoba-whisper: 2 decoder
    layers) ships its teacher's heads (layers up to 31): they mean nothing in the student."""
    layers, per_layer = model_config.decoder_layers, model_config.decoder_attention_heads
    default = tuple((layer, head) for layer in range(layers // 2, layers) for head in range(per_layer))
    if not configured:
        return default
    heads = tuple((int(layer), int(head)) for layer, head in configured)
    foreign = [pair for pair in heads if not (0 <= pair[0] < layers and 0 <= pair[1] < per_layer)]
    if foreign:
        log.warning("the checkpoint's alignment heads name %d head(s) this model does not have (it has %d decoder "
                    "layers of %d heads; e.g. layer %d head %d): word timestamps use every head of the last half "
                    "of the layers instead", len(foreign), layers, per_layer, *foreign[0])
        return default
    return heads


class LoadedModel:
    """A transformers Whisper checkpoint in one dtype on one device, ready for the decoder."""

    def __init__(self, name: str, model, tokenizer, feature_extractor, device: torch.device, dtype: torch.dtype,
                 int8_weights: bool = False) -> None:
        self.name = name
        self.int8_weights = int8_weights
        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.device = device
        self.dtype = dtype
        config = model.generation_config
        self.tokens = SpecialTokens.from_generation_config(config)
        self.suppress_tokens: tuple[int, ...] = tuple(config.suppress_tokens or ())
        self.begin_suppress_tokens: tuple[int, ...] = tuple(config.begin_suppress_tokens or ())
        self.alignment_heads = alignment_heads(model.config, getattr(config, "alignment_heads", None))
        self.max_target_positions = model.config.max_target_positions
        # (mel bins, frequencies), float32 from the start: no float64 tensor is ever made
        self._mel_filters = torch.from_numpy(np.ascontiguousarray(feature_extractor.mel_filters.T, dtype=np.float32))
        self._window = torch.hann_window(N_FFT)
        self.encoder = AudioEncoder(model, self.attention)

    @property
    def english_only(self) -> bool:
        return not self.tokens.multilingual

    @property
    def attention(self) -> str:
        """The attention implementation our encoder and decoder passes use (`[model] attention`)."""
        return str(getattr(self.model.config, "_attn_implementation", "eager"))

    @classmethod
    def load(cls, path: str, device: torch.device, dtype: torch.dtype, attention: str, int8_weights: bool = False
             ) -> "LoadedModel":
        """`int8_weights` (CPU only): the projections quantized to int8 after loading."""
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        try:
            processor = WhisperProcessor.from_pretrained(path)
            model = WhisperForConditionalGeneration.from_pretrained(
                path, dtype=dtype, attn_implementation=attention, low_cpu_mem_usage=True
            )
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot load model {path!r}: {error}") from None
        SpecialTokens.from_generation_config(model.generation_config)  # before the weights go to the device
        model.to(device)
        model.eval()
        if int8_weights:
            quantize_model(model)
        return cls(path, model, processor.tokenizer, processor.feature_extractor, device, dtype, int8_weights)

    def log_mel(self, pieces: list[np.ndarray]) -> torch.Tensor:
        """Log-mel spectrograms of up to 30 s of audio each, padded with silence to 30 s:
        (pieces, mel bins, 3000) in float32, on the GPU for CUDA and on the CPU otherwise.

        The feature extractor's own computation, in float32 throughout (it builds its mel filters
        as a float64 tensor at every call, which DirectML could not hold) and one STFT per batch.
        """
        audio = np.zeros((len(pieces), WINDOW_SAMPLES), dtype=np.float32)
        for row, piece in enumerate(pieces):
            piece = piece[:WINDOW_SAMPLES]
            audio[row, : len(piece)] = piece
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        waveform = torch.from_numpy(audio).to(device)
        stft = torch.stft(waveform, N_FFT, HOP_LENGTH, window=self._window.to(device), return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = torch.matmul(self._mel_filters.to(device), power)
        log_spec = mel.clamp(min=1e-10).log10()
        ceiling = log_spec.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(log_spec, ceiling - 8.0) + 4.0) / 4.0

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Encoder states (batch, 1500, width) on the device."""
        return self.encoder(mel.to(self.device, self.dtype))

    def text_tokens(self, text: str) -> list[int]:
        """Text tokens only: a prompt that spells a special token ("<|startoftranscript|>") is
        never read as one."""
        return [token for token in self.tokenizer.encode(text, add_special_tokens=False)
                if token < self.tokens.end_of_text]

    def decode_text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode([token for token in tokens if token < self.tokens.end_of_text])
