"""ACRNN: the attention convolutional-recurrent network for speech emotion (the seed system's ACRNN_v3).

    log-Mel [N, 1, 128 mel, 130 frames] (dB)
    -> per-window standardisation (zero mean, unit variance: loudness and microphone gain drop out)
    -> stem: 3x3 conv, BN, ReLU, 2x2 max-pool
    -> 4 residual blocks widening 64 -> 128 -> 256 -> 512 channels (times `width`), each:
       two 3x3 conv+BN (1x1 projection shortcut), ReLU, CBAM (channel then spatial attention), max-pool
       (frequency halves in every block, time only in the first two so the recurrent part keeps
       16 steps of ~190 ms)
    -> time-major reshape [N, T, C*F] and a linear projection
    -> 2-layer bidirectional LSTM
    -> multi-head self-attention over time (residual + LayerNorm)
    -> global mean pooling over time
    -> MLP head -> 7 logits in LABELS order

`width` scales every channel count and the recurrent size (at least 64): 1.0 is the full model
(6.6 M parameters, hidden 256), 0.125 the compact variant that ships (165 k parameters, hidden 64,
under 1 MB of ONNX, a few ms per window on one CPU core): it is what trains in under 30 minutes on
a shared 2-core CPU. On a GPU, train `--width 1.0`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from emomesh.labels import NUM_LABELS
from services.audio.features import N_FRAMES, N_MELS


@dataclass(frozen=True)
class ACRNNConfig:
    width: float = 0.125
    heads: int = 4
    dropout: float = 0.3
    n_mels: int = N_MELS
    n_frames: int = N_FRAMES
    classes: int = NUM_LABELS

    def channels(self, base: int) -> int:
        return max(8, round(base * self.width))

    @property
    def hidden(self) -> int:
        """Model width of the recurrent/attention part (a multiple of heads*2)."""
        step = self.heads * 2
        return max(64, round(256 * self.width / step) * step)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        inner = max(4, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, inner, 1), nn.ReLU(inplace=True), nn.Conv2d(inner, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    def __init__(self, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels)
        self.spatial = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class ResidualCBAMBlock(nn.Module):
    def __init__(self, cin: int, cout: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)
        self.attention = CBAM(cout)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.attention(self.act(self.body(x) + self.shortcut(x))))


class ACRNN(nn.Module):
    # (frequency, time) pooling per residual block
    POOLS = ((2, 2), (2, 2), (2, 1), (2, 1))

    def __init__(self, config: ACRNNConfig = ACRNNConfig()) -> None:
        super().__init__()
        self.config = config
        widths = [config.channels(c) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        blocks, cin = [], widths[0]
        for cout, pool in zip(widths, self.POOLS, strict=True):
            blocks.append(ResidualCBAMBlock(cin, cout, pool))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        freq, time = config.n_mels // 2, config.n_frames // 2
        for pf, pt in self.POOLS:
            freq, time = freq // pf, time // pt
        self.steps = time
        hidden = config.hidden
        self.project = nn.Sequential(nn.Linear(cin * freq, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True))
        self.lstm = nn.LSTM(
            hidden, hidden // 2, num_layers=2, batch_first=True, bidirectional=True, dropout=config.dropout
        )
        self.attention = nn.MultiheadAttention(hidden, config.heads, dropout=config.dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(hidden)
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(hidden // 2, config.classes),
        )

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log_mel [N, 1, mels, frames] in dB -> logits [N, classes]."""
        mean = log_mel.mean(dim=(1, 2, 3), keepdim=True)
        std = log_mel.std(dim=(1, 2, 3), keepdim=True)
        x = (log_mel - mean) / (std + 1e-5)
        x = self.blocks(self.stem(x))  # [N, C, F, T]
        n, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(n, t, c * f)
        x = self.project(x)
        x, _ = self.lstm(x)
        attended, _ = self.attention(x, x, x, need_weights=False)
        x = self.attention_norm(x + attended)
        return self.head(x.mean(dim=1))


class ACRNNWithSoftmax(nn.Module):
    """What is exported to ONNX: probabilities instead of logits."""

    def __init__(self, model: ACRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(log_mel), dim=-1)
