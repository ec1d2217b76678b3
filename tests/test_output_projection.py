"""The output (vocabulary) projection on a CPU in float32 is prepacked for oneDNN: rows of a batch
get the plain product's logits, one row keeps the plain product, and where the prepacked product
is missing or disagrees the plain one serves."""

from __future__ import annotations

import pytest
import torch

from whisper_api.inference.quantization import FloatProjection, PackedVocabularyProjection, vocabulary_projection


def test_the_loaded_model_prepacks_its_output_projection(engine):
    assert isinstance(engine.decoder.forward.output, PackedVocabularyProjection)


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 16])
def test_prepacked_logits_are_the_plain_products(engine, rows):
    weight = engine.model.model.proj_out.weight.data
    packed = vocabulary_projection(engine.model.model)
    hidden = torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(rows))
    expected = torch.mm(hidden, weight.t())
    got = packed(hidden)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_without_the_prepacked_product_the_plain_one_serves(monkeypatch):
    weight = torch.randn(300, 16)

    def missing(*_arguments):
        raise RuntimeError("no such operator in this torch")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", missing)
    projection = PackedVocabularyProjection.made_for(weight)
    assert type(projection) is FloatProjection
    hidden = torch.randn(3, 16)
    assert torch.equal(projection(hidden), torch.mm(hidden, weight.t()))


def test_other_dtypes_keep_the_plain_product():
    assert type(PackedVocabularyProjection.made_for(torch.randn(300, 16).bfloat16())) is FloatProjection
