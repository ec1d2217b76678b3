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
from .quantization import Projection, fuse_projections, projection, qkv_projection

__all__ = ["AudioEncoder", "fuse_projections"]


@dataclass
class EncoderLayerWeights:
    attention_norm: tuple[torch.Tensor, torch.Tensor]
    qkv: Projection  # query, key and value projections fused
    out: Projection
    mlp_norm: tuple[torch.Tensor, torch.Tensor]
    fc1: Projection
    fc2: Projection


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
        return EncoderLayerWeights(
            attention_norm=(layer.self_attn_layer_norm.weight.data, layer.self_attn_layer_norm.bias.data),
            qkv=qkv_projection(layer.self_attn),
            out=projection(layer.self_attn.out_proj),
            mlp_norm=(layer.final_layer_norm.weight.data, layer.final_layer_norm.bias.data),
            fc1=projection(layer.fc1),
            fc2=projection(layer.fc2),
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
            qkv = layer.qkv(normed).view(rows, frames, 3, heads, width // heads)
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attended = self.attend(query, key, value)
            attended = attended.transpose(1, 2).reshape(rows * frames, width)
            hidden = layer.out.plus(attended, hidden)
            normed = F.layer_norm(hidden, (width,), *layer.mlp_norm, self.epsilon)
            expanded = layer.fc1(normed)
            # in place on the CPU, where a fresh (frames x 4 width) tensor a layer costs page faults;
            # elsewhere the plain operator (torch-directml's in-place coverage is not documented)
            expanded = torch.ops.aten.gelu_(expanded) if self.in_place else F.gelu(expanded)
            hidden = layer.fc2.plus(expanded, hidden)
        hidden = F.layer_norm(hidden, (width,), *self.final_norm, self.epsilon)
        return hidden.view(rows, frames, width)
