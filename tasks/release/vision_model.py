"""The image models: a compact CNN and a plain baseline, each with the preprocessing inside.

Both take what a site decodes — uint8 pixels [batch, height, width, channels], any height and
width — and return per-class probabilities (the good class first) and an embedding (the
penultimate layer: what drift on images is measured on). Scaling to [0, 1], the channel layout,
resizing to the trained size and normalisation happen inside the module, so they are inside the
ONNX graph too and a site cannot get them wrong. Its own module so that importing torch stays
optional.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class Preprocess(nn.Module):
    """uint8 NHWC pixels of any size → float NCHW in [0, 1] at the trained size (bilinear)."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.size = (height, width)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32).permute(0, 3, 1, 2) / 255.0
        return functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)


class ImageModel(nn.Module):
    """Preprocess → `classify` on [0, 1] pixels. Training calls `classify` on augmented pixels;
    the export and the site call `forward` on decoded ones."""

    def __init__(self, height: int, width: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.preprocess = Preprocess(height, width)
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1))
        self.register_buffer("std", std.reshape(1, -1, 1, 1))

    mean: torch.Tensor
    std: torch.Tensor

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) of [0, 1] pixels at the trained size."""
        embedding = self.embed((x - self.mean) / self.std)
        return self.head(embedding), embedding

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.classify(self.preprocess(image))
        return torch.softmax(logits, dim=1), embedding


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class DefectCNN(ImageModel):
    """Four 3x3 conv blocks (three halve the size), then global average and max pooling side by
    side: the max keeps a defect of a few pixels that an average over the part would wash out.
    At the default widths (32-64-96-128) about 190k weights and 40 million multiply-adds per 64x64 image."""

    def __init__(self, height: int, width: int, channels: int, classes: int, mean: torch.Tensor, std: torch.Tensor,
                 widths: tuple[int, int, int, int]) -> None:
        super().__init__(height, width, mean, std)
        a, b, c, d = widths
        self.features = nn.Sequential(_block(channels, a), nn.MaxPool2d(2), _block(a, b), nn.MaxPool2d(2),
                                      _block(b, c), nn.MaxPool2d(2), _block(c, d))
        self.dropout = nn.Dropout(0.2)
        self.out = nn.Linear(2 * d, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.features(x)
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(embedding))


class StatsBaseline(ImageModel):
    """What a careful engineer tries before a CNN: the part at 8x8 pixels plus statistics of its
    brightness and of its fine detail (the image minus a 5x5 blur: scratches, pits and cracks
    live there), standardised, into a multinomial logistic regression fitted by scikit-learn."""

    GRID = 8

    def __init__(self, height: int, width: int, channels: int, classes: int, mean: torch.Tensor,
                 std: torch.Tensor) -> None:
        super().__init__(height, width, mean, std)
        n = channels * self.GRID * self.GRID + 7 * channels
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.out = nn.Linear(n, classes)

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        coarse = functional.adaptive_avg_pool2d(x, self.GRID).flatten(1)
        detail = x - functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
        spread = detail.std(dim=(2, 3))
        stats = [x.mean(dim=(2, 3)), x.std(dim=(2, 3)), spread, detail.amax(dim=(2, 3)), -detail.amin(dim=(2, 3)),
                 (detail.abs() > 3 * spread[:, :, None, None]).float().mean(dim=(2, 3)),
                 functional.max_pool2d(detail.abs(), 4).std(dim=(2, 3))]
        return torch.cat([coarse, *stats], dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw_features(x) - self.feature_mean) / self.feature_std

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(embedding)
