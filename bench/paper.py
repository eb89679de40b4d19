"""Table 3 of Kim, Lee & Lee (CVPR 2016): mean PSNR (dB) / SSIM on Y, the numbers this project measures itself against.

The paper's values are rounded to 0.01 dB and 0.0001. Its per-cell time column is not recorded here yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# (dataset, scale, method) -> (psnr, ssim)
_ROWS = {
    "Set5": {
        2: ((33.66, 0.9299), (36.66, 0.9542), (37.53, 0.9587)),
        3: ((30.39, 0.8682), (32.75, 0.9090), (33.66, 0.9213)),
        4: ((28.42, 0.8104), (30.48, 0.8628), (31.35, 0.8838)),
    },
    "Set14": {
        2: ((30.24, 0.8688), (32.42, 0.9063), (33.03, 0.9124)),
        3: ((27.55, 0.7742), (29.28, 0.8209), (29.77, 0.8314)),
        4: ((26.00, 0.7027), (27.49, 0.7503), (28.01, 0.7674)),
    },
    "B100": {
        2: ((29.56, 0.8431), (31.36, 0.8879), (31.90, 0.8960)),
        3: ((27.21, 0.7385), (28.41, 0.7863), (28.82, 0.7976)),
        4: ((25.96, 0.6675), (26.90, 0.7101), (27.29, 0.7251)),
    },
    "Urban100": {
        2: ((26.88, 0.8403), (29.50, 0.8946), (30.76, 0.9140)),
        3: ((24.46, 0.7349), (26.24, 0.7989), (27.14, 0.8279)),
        4: ((23.14, 0.6577), (24.52, 0.7221), (25.18, 0.7524)),
    },
}
_METHODS = ("bicubic", "srcnn", "vdsr")

PAPER_TABLE3: Mapping[tuple[str, float, str], tuple[float, float]] = MappingProxyType(
    {
        (dataset, scale, method): cell
        for dataset, by_scale in _ROWS.items()
        for scale, cells in by_scale.items()
        for method, cell in zip(_METHODS, cells, strict=True)
    }
)


def paper_value(dataset: str, scale: float, method: str) -> tuple[float, float] | None:
    """The paper's (PSNR, SSIM) for this cell, or None where the paper has none (another dataset, scale or method)."""
    return PAPER_TABLE3.get((dataset, scale, method))
