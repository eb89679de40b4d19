"""The two networks as data, without torch: their configs, the tensors their weights hold, their halo.

What a file's metadata says of its network is checked against these before anything is built or loaded
(vdsr.networks builds the torch modules from the same configs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum


class Architecture(str, Enum):
    """The networks of vdsr.networks, by the name weights, graphs and model cards record."""

    vdsr = "vdsr"
    srcnn = "srcnn"


@dataclass(frozen=True)
class VDSRConfig:
    depth: int = 20  # conv layers: 1 -> channels, (depth - 2) x channels -> channels, channels -> 1
    channels: int = 64
    bias: bool = True


@dataclass(frozen=True)
class SRCNNConfig:
    kernels: tuple[int, int, int] = (9, 5, 5)  # "9-5-5", the better variant of Dong et al. (TPAMI 2015)
    channels: tuple[int, int] = (64, 32)


NetworkConfig = VDSRConfig | SRCNNConfig

# The largest networks any file may describe (vdsr-train makes depth 20, 64 channels; SRCNN 9-5-5, 64/32): a file
# cannot make the runtime build, or tile with, a network of any size it likes.
MAX_DEPTH = 128
MAX_CHANNELS = 1024
MAX_KERNEL = 15


def network_config(architecture: str, fields: dict[str, object] | None = None) -> NetworkConfig:
    """The config of `architecture` from its fields as JSON holds them (lists for tuples). ValueError for an unknown
    architecture, unknown fields or values no network can have."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in (fields or {}).items()}
    if architecture == Architecture.vdsr:
        vdsr = VDSRConfig(**fields)  # type: ignore[arg-type]
        if not (_count(vdsr.depth, 2, MAX_DEPTH) and _count(vdsr.channels, 1, MAX_CHANNELS)):
            raise ValueError(f"Expected depth 2..{MAX_DEPTH} and channels 1..{MAX_CHANNELS}, got {vdsr}")
        if not isinstance(vdsr.bias, bool):
            raise ValueError(f"Expected bias true or false, got {vdsr.bias!r}")
        return vdsr
    if architecture == Architecture.srcnn:
        srcnn = SRCNNConfig(**fields)  # type: ignore[arg-type]
        kernels, channels = srcnn.kernels, srcnn.channels
        if not (
            isinstance(kernels, tuple)
            and len(kernels) == 3
            and all(_count(k, 1, MAX_KERNEL) and k % 2 for k in kernels)
        ):
            raise ValueError(f"Expected odd kernel sizes up to {MAX_KERNEL}, got {kernels}")
        if not (
            isinstance(channels, tuple) and len(channels) == 2 and all(_count(c, 1, MAX_CHANNELS) for c in channels)
        ):
            raise ValueError(f"Expected two channel counts 1..{MAX_CHANNELS}, got {channels}")
        return srcnn
    expected = " or ".join(repr(a.value) for a in Architecture)
    raise ValueError(f"Unknown architecture {architecture!r}; expected {expected}")


def _count(value: object, least: int, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= most


def config_fields(config: NetworkConfig) -> dict[str, object]:
    """The config as weights, graphs and cards record it."""
    return asdict(config)


def architecture_name(config: NetworkConfig) -> str:
    return Architecture.vdsr.value if isinstance(config, VDSRConfig) else Architecture.srcnn.value


def halo(config: NetworkConfig) -> int:
    """Receptive-field radius: how far an output pixel sees (tiles overlap by it). VDSR: one pixel per 3x3 layer
    (20 for the paper's depth); SRCNN: half of each kernel."""
    if isinstance(config, VDSRConfig):
        return config.depth
    return sum(k // 2 for k in config.kernels)


def widest_channels(config: NetworkConfig) -> int:
    """The most channels any layer has: what a window's working memory grows with."""
    return config.channels if isinstance(config, VDSRConfig) else max(config.channels)


def parameter_shapes(config: NetworkConfig, *, max_layers: int | None = None) -> dict[str, tuple[int, ...]]:
    """The state_dict's tensor names and shapes of the network of `config`, worked out without building it: weights
    from elsewhere are checked against them before anything is allocated. ValueError for a config of more than
    `max_layers` layers (a file's header cannot describe more tensors than it holds)."""
    if isinstance(config, VDSRConfig):
        depth, channels = config.depth, config.channels
        if max_layers is not None and depth > max_layers:
            raise ValueError(f"the config declares {depth} layers, more than the {max_layers} tensors present")
        sizes = [1] + [channels] * (depth - 1) + [1]  # channels in and out of each 3x3 conv
        layers = [(f"body.{2 * i}", (sizes[i + 1], sizes[i], 3, 3)) for i in range(depth)]
        bias = config.bias
    else:
        (k1, k2, k3), (c1, c2) = config.kernels, config.channels
        layers = [("body.0", (c1, 1, k1, k1)), ("body.2", (c2, c1, k2, k2)), ("body.4", (1, c2, k3, k3))]
        bias = True
    shapes = {f"{name}.weight": shape for name, shape in layers}
    return shapes | ({f"{name}.bias": shape[:1] for name, shape in layers} if bias else {})
