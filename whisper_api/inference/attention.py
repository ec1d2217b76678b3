"""The attention the encoder and decoder passes use: `sdpa` (torch's fused kernel) or `eager`
(matrix products and a softmax), as `[model] attention` says.

`eager` is there for devices whose fused kernel fails or falls back (the DirectML advice in the
README and doctor): every attention call of ours goes through the one chosen here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Attention = Callable[..., torch.Tensor]


def eager_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    scores = torch.matmul(query, key.transpose(-1, -2)) * (query.shape[-1] ** -0.5)
    if is_causal:
        length = scores.shape[-1]
        future = torch.ones((length, length), dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(future[-scores.shape[-2]:], float("-inf"))
    if attn_mask is not None:
        scores = scores + attn_mask
    return torch.matmul(scores.softmax(dim=-1), value)


def attention_function(name: str) -> Attention:
    if name == "eager":
        return eager_attention
    if name == "sdpa":
        return F.scaled_dot_product_attention
    raise ValueError(f"unknown attention implementation {name!r}: sdpa or eager")
