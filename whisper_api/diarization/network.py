"""CAM++ (3D-Speaker's context-aware masking network) in plain torch: fbank windows -> 192-d embeddings.

Module names follow 3D-Speaker's `speakerlab.models.campplus` so that its state dict
(`campplus_cn_en_common.pt`) loads with `strict=True`; the structure is the paper's
(arXiv:2303.00332): a 2-D residual front end over frequency, a TDNN, three densely connected
blocks of context-aware masking layers, statistics pooling, and a 192-d affine layer.
Inference only: batch norms always use their running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EMBEDDING_SIZE = 192
SEGMENT_POOLING_FRAMES = 100


def batchnorm_relu(channels: int) -> nn.Sequential:
    layers = nn.Sequential()
    layers.add_module("batchnorm", nn.BatchNorm1d(channels))
    layers.add_module("relu", nn.ReLU())
    return layers


class ResidualBlock(nn.Module):
    """3x3 conv pair with a shortcut; strides shrink frequency only, never time."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FrontEnd(nn.Module):
    """(batch, mel bins, frames) -> (batch, 32 * bins / 8, frames)."""

    def __init__(self, mel_bins: int = 80, channels: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(ResidualBlock(channels, channels, 2), ResidualBlock(channels, channels, 1))
        self.layer2 = nn.Sequential(ResidualBlock(channels, channels, 2), ResidualBlock(channels, channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (mel_bins // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.flatten(1, 2)


class TimeDelayLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=False
        )
        self.nonlinear = batchnorm_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class ContextAwareMask(nn.Module):
    """A local convolution scaled by a mask from the utterance mean plus 100-frame segment means."""

    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(
            bn_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // 2, 1)
        self.linear2 = nn.Conv1d(bn_channels // 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + self.segment_means(x)
        mask = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return local * mask

    @staticmethod
    def segment_means(x: torch.Tensor) -> torch.Tensor:
        means = F.avg_pool1d(x, SEGMENT_POOLING_FRAMES, SEGMENT_POOLING_FRAMES, ceil_mode=True)
        spread = means.unsqueeze(-1).expand(*means.shape, SEGMENT_POOLING_FRAMES)
        return spread.reshape(*means.shape[:-1], -1)[..., : x.shape[-1]]


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int, bn_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = batchnorm_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = batchnorm_relu(bn_channels)
        self.cam_layer = ContextAwareMask(bn_channels, growth, kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class DenseBlock(nn.ModuleDict):
    """Each layer sees every earlier layer's output, concatenated on channels."""

    def __init__(self, layers: int, in_channels: int, growth: int, bn_channels: int, dilation: int) -> None:
        super().__init__(
            {
                f"tdnnd{index + 1}": DenseLayer(in_channels + index * growth, growth, bn_channels, 3, dilation)
                for index in range(layers)
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = batchnorm_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatisticsPooling(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1)], dim=-1)


class EmbeddingLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = nn.Sequential()
        self.nonlinear.add_module("batchnorm", nn.BatchNorm1d(out_channels, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPlusPlus(nn.Module):
    """(batch, frames, 80) normalised fbank -> (batch, 192) speaker embeddings."""

    def __init__(self, mel_bins: int = 80, growth: int = 32, bottleneck: int = 4, channels: int = 128) -> None:
        super().__init__()
        self.head = FrontEnd(mel_bins)
        xvector = nn.Sequential()
        xvector.add_module("tdnn", TimeDelayLayer(self.head.out_channels, channels, 5, stride=2))
        for index, (layers, dilation) in enumerate(zip((12, 24, 16), (1, 2, 2)), start=1):
            xvector.add_module(f"block{index}", DenseBlock(layers, channels, growth, bottleneck * growth, dilation))
            channels += layers * growth
            xvector.add_module(f"transit{index}", TransitLayer(channels, channels // 2))
            channels //= 2
        xvector.add_module("out_nonlinear", batchnorm_relu(channels))
        xvector.add_module("stats", StatisticsPooling())
        xvector.add_module("dense", EmbeddingLayer(channels * 2, EMBEDDING_SIZE))
        self.xvector = xvector

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(features.transpose(1, 2)))
