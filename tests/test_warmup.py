"""The warm-up runs the model for real, on the path requests take, and says how long it took."""

from __future__ import annotations

import dataclasses
import logging
import re

from whisper_api.config import ModelSettings
from whisper_api.engine import Engine


def test_warm_up_transcribes_the_shipped_clip_through_the_decoder(engine, monkeypatch, caplog):
    decoded_rows = []
    decode = engine.decoder.submit_rows  # the clip's first pass

    def counting_decode(encoded, *arguments, **keywords):
        decoded_rows.append(encoded.shape[0])
        return decode(encoded, *arguments, **keywords)

    monkeypatch.setattr(engine.decoder, "submit_rows", counting_decode)
    with caplog.at_level(logging.INFO, logger="whisper_api.engine"):
        engine.warm_up()
    assert sum(decoded_rows) >= 1  # the model decoded speech: silence would have been skipped before it
    assert re.search(r"warm-up: 4\.\d s of speech transcribed in \d+\.\d\d s \([1-9]\d* segments\)", caplog.text)


def test_start_up_warms_the_model_up_when_configured(model_settings: ModelSettings, caplog):
    with caplog.at_level(logging.INFO, logger="whisper_api.engine"):
        Engine.load(dataclasses.replace(model_settings, warmup=True))
    assert re.search(r"warm-up: .* transcribed in .* \([1-9]\d* segments\)", caplog.text)
