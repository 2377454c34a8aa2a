"""The PyTorch failure classifier. Its own module so that importing torch stays optional."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# Column positions in tasks.data.FEATURES.
AIR, PROCESS, SPEED, TORQUE, WEAR, QUALITY = range(6)


class FailureMLP(nn.Module):
    """Raw sensor features in, [P(ok), P(failure)] out.

    The failure rules of the machine are products and differences of raw readings (power,
    temperature gap, wear x torque); computing them and standardising inside the module keeps
    the ONNX graph's input the raw features an edge site receives.
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

    @staticmethod
    def derive(x: torch.Tensor) -> torch.Tensor:
        power_kw = x[:, TORQUE] * x[:, SPEED] * (2 * math.pi / 60) / 1000
        temp_gap = x[:, PROCESS] - x[:, AIR]
        strain = x[:, WEAR] * x[:, TORQUE] / 1000
        return torch.cat([x, torch.stack([power_kw, temp_gap, strain], dim=1)], dim=1)

    @classmethod
    def fit_scaler(cls, x_train: np.ndarray, hidden: tuple[int, ...] = (64, 32)) -> FailureMLP:
        derived = cls.derive(torch.from_numpy(np.asarray(x_train, dtype=np.float32)))
        std = derived.std(dim=0)
        return cls(derived.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std)), hidden)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((self.derive(x) - self.mean) / self.std).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.logits(x))
        return torch.stack([1 - p, p], dim=1)
