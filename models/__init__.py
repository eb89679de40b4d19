"""VDSR super-resolution toolkit (Kim, Lee & Lee, CVPR 2016).

This folder is the package root `vdsr`: it holds the weights this project trained (package data beside this file).
The stages are subpackages: `vdsr.runtime` (numpy image ops shared by every stage, inference), `vdsr.bench`
(evaluation protocol and benchmark), `vdsr.train` and `vdsr.export`.
"""

from pathlib import Path

from vdsr._version import __commit_id__, __version__

__all__ = ["Upscaler", "__commit_id__", "__version__", "shipped"]


def shipped(filename: str) -> Path:
    """A file shipped with the package beside this module: weights, ONNX graphs, model cards (e.g. vdsr.safetensors)."""
    return Path(__file__).with_name(filename)


from vdsr.runtime.upscaler import Upscaler  # noqa: E402  (after shipped(), which the runtime imports)
