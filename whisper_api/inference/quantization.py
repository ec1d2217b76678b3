"""The matrix products of our encoder and decoder passes: float weights, or int8 weights quantized at load time.

On a CPU a decoding step is bound by reading its weights (Whisper base: 106 MB of float32 for
the output projection alone, every step); int8 weights are a quarter of that. The int8 path is
the CPU's quantized linear kernel (fbgemm/oneDNN, in every x86 torch since 1.3, torch 2.4.1
included): weights quantized per output channel, symmetric; activations quantized per call
(one scale per tensor), as CTranslate2's int8 does, so the product runs on int8 instructions
(VNNI or AMX where the CPU has them). Keeping activations float (`torch._weight_int8pack_mm`)
measured 10x slower than float32 on a CPU without bfloat16; quantized activations measured
2.7 to 3.5x faster than float32 (docs/benchmarks.md).

Both kinds of projection answer the same three calls, so the passes are written once.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

# 7-bit activations: on CPUs without VNNI, fbgemm's u8 x s8 products accumulate pairs in 16
# bits, which full 8-bit activations can overflow (torch's own default for dynamic quantization).
REDUCE_RANGE = True


class FloatProjection:
    """x @ weight.T + bias with the float weights (the module's own tensors: no memory added)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight
        self.weight_t = weight.t()
        self.bias = bias

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() == 2:
            if self.bias is None:
                return torch.mm(inputs, self.weight_t)
            return torch.addmm(self.bias, inputs, self.weight_t)
        return F.linear(inputs, self.weight, self.bias)

    def into(self, inputs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Written into `out` (rows, outputs), a buffer whose views are made once."""
        return torch.addmm(self.bias, inputs, self.weight_t, out=out)

    def plus(self, inputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The projection added to the residual stream (2-D), in the new tensor."""
        return torch.addmm(self.bias, inputs, self.weight_t).add_(residual)


class AlignedVocabularyProjection(FloatProjection):
    """The output projection on CUDA, its rows padded to a multiple of 64 with zeros: with
    51865 rows the logits' row stride is not 16-byte aligned and cuBLAS falls back to a slow
    kernel (110 us a step for large-v3-turbo at 21 rows on an H200, a quarter of the memory-read
    speed). The token embedding becomes a view of the padded matrix, so no memory is added."""

    MULTIPLE = 64

    def __init__(self, linear: torch.nn.Module) -> None:
        weight = linear.weight.data
        rows = weight.shape[0]
        padded = weight.new_zeros((-(-rows // self.MULTIPLE) * self.MULTIPLE, weight.shape[1]))
        padded[:rows] = weight
        linear.weight.data = padded[:rows]  # tied to the token embedding: both now share `padded`
        super().__init__(padded, None)
        self.rows = rows

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.mm(inputs, self.weight_t)[:, : self.rows]


class PackedVocabularyProjection(FloatProjection):
    """The output projection on a CPU in float32, its weight also kept in oneDNN's blocked layout.

    The product of a few rows with the (vocabulary x width) matrix is where the BLAS's small-row
    kernel is worst: it repacks the whole matrix at every call (Whisper base at 8 rows: 7.5 ms a
    step against 3.7 ms prepacked on two cores, at 16 rows 15 ms against 7). One row keeps the
    plain product, a matrix-vector kernel that reads the weight once and is faster still. The
    packed copy costs the projection's size again (106 MB for base, 265 MB for large-v3)."""

    PACKED_FOR_ROWS = 8  # oneDNN's layout for this many rows serves 2 to 16 rows alike (measured)

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight, None)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, self.PACKED_FOR_ROWS)

    @classmethod
    def made_for(cls, weight: torch.Tensor) -> "Projection":
        """The packed projection where this torch has oneDNN's prepacked product and it agrees
        with the plain one; else the plain one."""
        if not (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()):
            return FloatProjection(weight, None)
        try:
            packed = cls(weight)
            probe = torch.linspace(-1.0, 1.0, 2 * weight.shape[1]).view(2, -1)
            agrees = torch.allclose(packed(probe), torch.mm(probe, weight.t()), rtol=1e-4, atol=1e-4)
        except (RuntimeError, AttributeError):  # no such operator, or not for float32, in this torch
            return FloatProjection(weight, None)
        return packed if agrees else FloatProjection(weight, None)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() == 2 and inputs.shape[0] > 1:
            return torch.ops.mkldnn._linear_pointwise(inputs, self.packed, None, "none", [], "")
        return super().__call__(inputs)


class Int8Projection:
    """The same product with int8 weights (per output channel) and activations quantized per call."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        weight = weight.detach().float().cpu()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # torch >= 2.10 warns that quantized tensors are deprecated
            warnings.simplefilter("ignore")
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(
                quantized, None if bias is None else bias.detach().float().cpu())
        self.outputs, self.inputs = weight.shape

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(inputs, self.packed, REDUCE_RANGE)

    def into(self, inputs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out.copy_(torch.ops.quantized.linear_dynamic(inputs, self.packed, REDUCE_RANGE))

    def plus(self, inputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(inputs, self.packed, REDUCE_RANGE).add_(residual)


# With int8 weights, a decoding step reads the encoder's keys and values more than its weights
# (Whisper base at 8 rows: 296 MB of them in float32 against 48 MB of int8 weights a step), so
# they are kept in bfloat16: half the reads, 1.4 to 2.8x faster cross-attention on two cores,
# on CPUs with or without bfloat16 instructions (converting it to float32 is a shift).
INT8_ENCODER_KEYS_DTYPE = torch.bfloat16

Projection = FloatProjection | AlignedVocabularyProjection | PackedVocabularyProjection | Int8Projection

# Where a module's int8 weights are kept once quantized (see quantize_model).
INT8_ATTRIBUTE = "int8_projection"


def vocabulary_projection(model) -> Projection:
    """The output (vocabulary) projection: aligned on CUDA, prepacked on a CPU in float32, int8
    once quantized, else float."""
    linear = model.proj_out
    if getattr(linear, INT8_ATTRIBUTE, None) is not None:
        return projection(linear)
    if linear.weight.device.type == "cuda" and linear.weight.shape[0] % AlignedVocabularyProjection.MULTIPLE:
        return AlignedVocabularyProjection(linear)
    if linear.weight.device.type == "cpu" and linear.bias is None:
        return PackedVocabularyProjection.made_for(linear.weight.data)
    return projection(linear)


def projection(module: torch.nn.Module) -> Projection:
    """A linear module's product: int8 once quantize_model gave it int8 weights, else float."""
    int8 = getattr(module, INT8_ATTRIBUTE, None)
    if int8 is not None:
        return int8
    return FloatProjection(module.weight.data, module.bias.data if module.bias is not None else None)


def fuse_projections(attention: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """One (3 * width, width) matrix holding the query, key and value projections; the module's
    weights become views of it. The key projection has no bias: its part of the bias is zero."""
    query, key, value = attention.q_proj, attention.k_proj, attention.v_proj
    fused = torch.cat([query.weight.data, key.weight.data, value.weight.data])
    width = query.weight.shape[0]
    for index, part in enumerate((query, key, value)):
        part.weight.data = fused[index * width : (index + 1) * width]
    bias = torch.cat([query.bias.data, torch.zeros_like(query.bias.data), value.bias.data])
    return fused, bias


def qkv_projection(attention: torch.nn.Module) -> Projection:
    """The attention's query, key and value projections as one product (int8 once quantized)."""
    int8 = getattr(attention, INT8_ATTRIBUTE, None)
    return int8 if int8 is not None else FloatProjection(*fuse_projections(attention))


def quantize_model(model) -> int:
    """Give every projection of a transformers Whisper model int8 weights, in place: the
    attention's query/key/value fused (kept on the attention module), the output, MLP, cross
    key/value and output-vocabulary projections. The float weights of the quantized modules are
    released (the vocabulary projection's stays: the token embedding is the same tensor).
    Returns the bytes of int8 weights made."""
    made = 0
    stacks = (model.model.encoder.layers, model.model.decoder.layers)
    for layers in stacks:
        for layer in layers:
            attentions = [layer.self_attn] + ([layer.encoder_attn] if hasattr(layer, "encoder_attn") else [])
            weight, bias = fuse_projections(layer.self_attn)
            setattr(layer.self_attn, INT8_ATTRIBUTE, Int8Projection(weight, bias))
            made += weight.numel()
            linears = [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                       layer.self_attn.out_proj, layer.fc1, layer.fc2]
            if len(attentions) == 2:
                cross = layer.encoder_attn
                linears += [cross.q_proj, cross.k_proj, cross.v_proj, cross.out_proj]
            for linear in linears[3:]:
                setattr(linear, INT8_ATTRIBUTE, Int8Projection(linear.weight.data,
                                                               linear.bias.data if linear.bias is not None else None))
                made += linear.weight.numel()
            for linear in linears:
                linear.weight.data = linear.weight.data.new_empty((0,))
    setattr(model.proj_out, INT8_ATTRIBUTE, Int8Projection(model.proj_out.weight.data, None))
    made += model.proj_out.weight.numel()
    return made
