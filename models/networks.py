"""VDSR and SRCNN (PyTorch) on ILR luminance (N, 1, H, W) in [0, 1]; zero padding, so any H, W >= 1 keeps its size.

Importing this module imports torch: the inference runtime loads it only for the PyTorch backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from vdsr.catalogue import Architecture


@dataclass(frozen=True)
class VDSRConfig:
    depth: int = 20  # conv layers: 1 -> channels, (depth - 2) x channels -> channels, channels -> 1
    channels: int = 64
    bias: bool = True


@dataclass(frozen=True)
class SRCNNConfig:
    kernels: tuple[int, int, int] = (9, 5, 5)  # "9-5-5", the better variant of Dong et al. (TPAMI 2015)
    channels: tuple[int, int] = (64, 32)


def he_init(module: nn.Module) -> None:
    """He et al. (2015) initialisation of every convolution, zero biases: the VDSR paper's choice."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class VDSR(nn.Module):
    """Kim, Lee & Lee (CVPR 2016): 3x3 conv + ReLU stack with a global residual, output = ILR + net(ILR)."""

    def __init__(self, config: VDSRConfig = VDSRConfig()) -> None:
        super().__init__()
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
        return self.config.depth

    def forward(self, ilr: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.body(ilr)
        return ilr + residual


class SRCNN(nn.Module):
    """Dong, Loy, He & Tang (ECCV 2014 / TPAMI 2015), zero-padded so output size = input size; no residual."""

    def __init__(self, config: SRCNNConfig = SRCNNConfig()) -> None:
        super().__init__()
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
        return sum(k // 2 for k in self.config.kernels)

    def forward(self, ilr: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(ilr)
        return out


def build_model(architecture: str, config: dict[str, object] | None = None) -> VDSR | SRCNN:
    """A model from its name and config fields, as stored in checkpoints and model cards."""
    config = config or {}
    if architecture == Architecture.vdsr:
        return VDSR(VDSRConfig(**config))  # type: ignore[arg-type]
    if architecture == Architecture.srcnn:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}  # JSON turns tuples into lists
        return SRCNN(SRCNNConfig(**fields))  # type: ignore[arg-type]
    expected = " or ".join(repr(a.value) for a in Architecture)
    raise ValueError(f"Unknown architecture {architecture!r}; expected {expected}")


def parameter_shapes(
    architecture: str, config: dict[str, object] | None = None, *, max_layers: int | None = None
) -> dict[str, tuple[int, ...]]:
    """The state_dict's tensor names and shapes of build_model(architecture, config), worked out without building
    the model: weights from elsewhere are checked against them before anything is allocated. ValueError for a
    config of more than `max_layers` layers (a file's header cannot describe more tensors than it holds)."""
    config = config or {}
    if architecture == Architecture.vdsr:
        vdsr = VDSRConfig(**config)  # type: ignore[arg-type]
        depth, channels = vdsr.depth, vdsr.channels
        if not (isinstance(depth, int) and isinstance(channels, int) and depth >= 2 and channels >= 1):
            raise ValueError(f"Expected integers depth >= 2 and channels >= 1, got {vdsr}")
        if max_layers is not None and depth > max_layers:
            raise ValueError(f"the config declares {depth} layers, more than the {max_layers} tensors present")
        sizes = [1] + [channels] * (depth - 1) + [1]  # channels in and out of each 3x3 conv
        layers = [(f"body.{2 * i}", (sizes[i + 1], sizes[i], 3, 3)) for i in range(depth)]
        bias = bool(vdsr.bias)
    elif architecture == Architecture.srcnn:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        srcnn = SRCNNConfig(**fields)  # type: ignore[arg-type]
        (k1, k2, k3), (c1, c2) = srcnn.kernels, srcnn.channels
        layers = [("body.0", (c1, 1, k1, k1)), ("body.2", (c2, c1, k2, k2)), ("body.4", (1, c2, k3, k3))]
        bias = True
    else:
        raise ValueError(f"Unknown architecture {architecture!r}")
    shapes = {f"{name}.weight": shape for name, shape in layers}
    return shapes | ({f"{name}.bias": shape[:1] for name, shape in layers} if bias else {})


def architecture_of(model: VDSR | SRCNN) -> str:
    """The name build_model takes for this model, as recorded in weights, graphs and model cards."""
    return Architecture.vdsr.value if isinstance(model, VDSR) else Architecture.srcnn.value


def model_config(model: VDSR | SRCNN) -> dict[str, object]:
    return asdict(model.config)
