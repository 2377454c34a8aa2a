"""The PyTorch failure classifier. Its own module so that importing torch stays optional."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FailureMLP(nn.Module):
    """Features in (raw columns, then derived ones), [P(ok), P(failure)] out.

    Standardising inside the module keeps the ONNX graph's input what the site sends; the
    derived features (power, temperature gap, wear x torque for a milling machine) come from the
    dataset spec and are computed by the graph's prefix (tasks/release/features.py).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: tuple[int, ...] = (64, 32)) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        layers: list[nn.Module] = []
        width = mean.shape[0]
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    @classmethod
    def fit_scaler(cls, x_train: np.ndarray, hidden: tuple[int, ...] = (64, 32)) -> FailureMLP:
        x = torch.from_numpy(np.asarray(x_train, dtype=np.float32))
        std = x.std(dim=0)
        return cls(x.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std)), hidden)

    mean: torch.Tensor  # buffers (saved with the model, moved with it), set in __init__
    std: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.logits(x))
        return torch.stack([1 - p, p], dim=1)
