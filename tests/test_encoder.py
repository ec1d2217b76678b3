"""Our encoder pass against transformers' encoder module on the same weights and speech: the same
states to float32 rounding, with either attention implementation."""

from __future__ import annotations

import pytest
import torch

from tests.support.speech import MEETING_SENTENCES, concatenate, japanese_speech
from whisper_api.inference.encoder import AudioEncoder
from whisper_api.inference.model import SAMPLE_RATE


@pytest.fixture(scope="module")
def mel(engine) -> torch.Tensor:
    audio, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[:3]], gap_seconds=0.8)
    return engine.model.log_mel([audio[: 20 * SAMPLE_RATE], audio[: 5 * SAMPLE_RATE]])


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_our_encoder_gives_transformers_encoder_states(engine, mel, attention):
    model = engine.model
    with torch.no_grad():
        theirs = model.model.get_encoder()(mel.to(model.device, model.dtype)).last_hidden_state.float()
        ours = AudioEncoder(model.model, attention)(mel.to(model.device, model.dtype)).float()
    assert ours.shape == theirs.shape == (2, 1500, model.model.config.d_model)
    relative = (ours - theirs).abs().max() / theirs.abs().max()
    tolerance = 1e-4 if model.dtype == torch.float32 else 2e-2  # summation order differs
    assert relative <= tolerance
