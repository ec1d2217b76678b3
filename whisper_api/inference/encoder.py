"""Whisper's audio encoder, forward pass only, over the transformers weights.

transformers' encoder layers are general (training, attention outputs, head masks): each layer
projects queries, keys and values with three matrix products, scales the queries in a separate
pass, and makes new tensors for every activation and residual. Encoding is a third to a half of
transcription time on a CPU (three 30 s chunks of Whisper base cost about a second on two cores),
so this pass does the same arithmetic with less traffic: the query, key and value projections are
one fused product (the module's own weights become views of it: no memory is added), the
activation and residual additions are in place, and the states stay 2-D between layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import attention_function


@dataclass
class EncoderLayerWeights:
    attention_norm: tuple[torch.Tensor, torch.Tensor]
    qkv: torch.Tensor  # (3 * width, width): query, key and value projections fused
    qkv_bias: torch.Tensor
    out: torch.Tensor
    out_bias: torch.Tensor
    mlp_norm: tuple[torch.Tensor, torch.Tensor]
    fc1: torch.Tensor
    fc1_bias: torch.Tensor
    fc2: torch.Tensor
    fc2_bias: torch.Tensor


def fuse_projections(attention) -> tuple[torch.Tensor, torch.Tensor]:
    """One (3 * width, width) matrix holding the query, key and value projections; the module's
    weights become views of it. The key projection has no bias: its part of the bias is zero."""
    query, key, value = attention.q_proj, attention.k_proj, attention.v_proj
    fused = torch.cat([query.weight.data, key.weight.data, value.weight.data])
    width = query.weight.shape[0]
    for index, projection in enumerate((query, key, value)):
        projection.weight.data = fused[index * width : (index + 1) * width]
    bias = torch.cat([query.bias.data, torch.zeros_like(query.bias.data), value.bias.data])
    return fused, bias


class AudioEncoder:
    """The encoder stack of one loaded model; holds no per-request state."""

    def __init__(self, model, attention: str = "sdpa") -> None:
        self.attend = attention_function(attention)
        encoder = model.model.encoder
        config = model.config
        self.conv1, self.conv2 = encoder.conv1, encoder.conv2
        self.positions = encoder.embed_positions.weight.data
        self.width = config.d_model
        self.heads = config.encoder_attention_heads
        self.final_norm = (encoder.layer_norm.weight.data, encoder.layer_norm.bias.data)
        self.epsilon = encoder.layer_norm.eps
        self.layers = [self._layer(layer) for layer in encoder.layers]
        self.in_place = self.positions.device.type == "cpu"

    @staticmethod
    def _layer(layer) -> EncoderLayerWeights:
        qkv, qkv_bias = fuse_projections(layer.self_attn)
        return EncoderLayerWeights(
            attention_norm=(layer.self_attn_layer_norm.weight.data, layer.self_attn_layer_norm.bias.data),
            qkv=qkv, qkv_bias=qkv_bias,
            out=layer.self_attn.out_proj.weight.data, out_bias=layer.self_attn.out_proj.bias.data,
            mlp_norm=(layer.final_layer_norm.weight.data, layer.final_layer_norm.bias.data),
            fc1=layer.fc1.weight.data, fc1_bias=layer.fc1.bias.data,
            fc2=layer.fc2.weight.data, fc2_bias=layer.fc2.bias.data,
        )

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        """(rows, mel bins, 3000) -> encoder states (rows, 1500, width)."""
        hidden = F.gelu(self.conv1(mel))
        hidden = F.gelu(self.conv2(hidden)).transpose(1, 2)
        rows, frames, width = hidden.shape
        hidden = (hidden + self.positions[:frames]).reshape(rows * frames, width)
        heads = self.heads
        for layer in self.layers:
            normed = F.layer_norm(hidden, (width,), *layer.attention_norm, self.epsilon)
            qkv = F.linear(normed, layer.qkv, layer.qkv_bias).view(rows, frames, 3, heads, width // heads)
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attended = self.attend(query, key, value)
            attended = attended.transpose(1, 2).reshape(rows * frames, width)
            hidden = torch.addmm(hidden, attended, layer.out.t()).add_(layer.out_bias)
            normed = F.layer_norm(hidden, (width,), *layer.mlp_norm, self.epsilon)
            expanded = F.linear(normed, layer.fc1, layer.fc1_bias)
            # in place on the CPU, where a fresh (frames x 4 width) tensor a layer costs page faults;
            # elsewhere the plain operator (torch-directml's in-place coverage is not documented)
            expanded = torch.ops.aten.gelu_(expanded) if self.in_place else F.gelu(expanded)
            hidden = torch.addmm(hidden, expanded, layer.fc2.t()).add_(layer.fc2_bias)
        hidden = F.layer_norm(hidden, (width,), *self.final_norm, self.epsilon)
        return hidden.view(rows, frames, width)
