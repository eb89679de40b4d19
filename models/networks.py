"""VDSR and SRCNN (PyTorch) on ILR luminance (N, 1, H, W) in [0, 1]; zero padding, so any H, W >= 1 keeps its size.

Importing this module imports torch: the inference runtime loads it only for the PyTorch backend."""

from __future__ import annotations

import torch
from torch import nn

from vdsr.architectures import (
    NetworkConfig,
    SRCNNConfig,
    VDSRConfig,
    architecture_name,
    config_fields,
    halo,
    network_config,
)

__all__ = ["SRCNN", "VDSR", "SRCNNConfig", "VDSRConfig", "architecture_of", "build_model", "model_config"]


def he_init(module: nn.Module) -> None:
    """He et al. (2015) initialisation of every convolution, zero biases: the VDSR paper's choice."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class VDSR(nn.Module):
    """Kim, Lee & Lee (CVPR 2016): 3x3 conv + ReLU stack with a global residual, output = ILR + net(ILR)."""

    def __init__(self, config: VDSRConfig | None = None) -> None:
        super().__init__()
        config = config or VDSRConfig()
        if config.depth < 2 or config.channels < 1:
            raise ValueError(f"Expected depth >= 2 and channels >= 1, got {config}")
        self.config = config
        c = config.channels
        layers: list[nn.Module] = [nn.Conv2d(1, c, 3, padding=1, bias=config.bias), nn.ReLU(inplace=True)]
        for _ in range(config.depth - 2):
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=config.bias), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(c, 1, 3, padding=1, bias=config.bias))
        self.body = nn.Sequential(*layers)
        he_init(self)

    @property
    def halo(self) -> int:
        """Receptive-field radius: each 3x3 layer reaches one pixel further (20 for the paper's depth)."""
        return halo(self.config)

    def forward(self, ilr: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.body(ilr)
        return ilr + residual


class SRCNN(nn.Module):
    """Dong, Loy, He & Tang (ECCV 2014 / TPAMI 2015), zero-padded so output size = input size; no residual."""

    def __init__(self, config: SRCNNConfig | None = None) -> None:
        super().__init__()
        config = config or SRCNNConfig()
        if any(k < 1 or k % 2 == 0 for k in config.kernels):
            raise ValueError(f"Expected odd kernel sizes, got {config.kernels}")
        self.config = config
        (k1, k2, k3), (c1, c2) = config.kernels, config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, k1, padding=k1 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, k2, padding=k2 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, 1, k3, padding=k3 // 2),
        )
        he_init(self)

    @property
    def halo(self) -> int:
        return halo(self.config)

    def forward(self, ilr: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(ilr)
        return out


def build_model(architecture: str, config: dict[str, object] | None = None) -> VDSR | SRCNN:
    """A model from its name and config fields, as stored in checkpoints and model cards."""
    return network(network_config(architecture, config))


def network(config: NetworkConfig) -> VDSR | SRCNN:
    """The torch module of a network config."""
    return VDSR(config) if isinstance(config, VDSRConfig) else SRCNN(config)


def architecture_of(model: VDSR | SRCNN) -> str:
    """The name build_model takes for this model, as recorded in weights, graphs and model cards."""
    return architecture_name(model.config)


def model_config(model: VDSR | SRCNN) -> dict[str, object]:
    return config_fields(model.config)
