"""VDSR super-resolution toolkit (Kim, Lee & Lee, CVPR 2016).

This folder is the package root `vdsr`, the bottom layer every stage builds on: `networks` (VDSR, SRCNN),
`catalogue` (the shipped models and their files, package data beside this module), `weights` (safetensors I/O),
`errors` (the error hierarchy and exit codes) and `files` (atomic writes, digests, opening inputs), and `Model`
(`model`: everything known about one model, read once from its files). Above it, imports point one way:
`vdsr.runtime` (images, tiling, backends, the Upscaler) <- `vdsr.bench` (the paper's protocol, metrics, data sets,
harness) <- `vdsr.train` and `vdsr.export`; the commands (`cli.py` modules) sit on top.

`from vdsr import Upscaler, Model` is the public API's front door: the names are looked up when first used, so that
importing the bottom layer never loads the layers above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vdsr._version import __commit_id__, __version__

if TYPE_CHECKING:
    from vdsr.model import Model
    from vdsr.runtime.upscaler import Upscaler

__all__ = ["Model", "Upscaler", "__commit_id__", "__version__"]


def __getattr__(name: str) -> Any:
    """`vdsr.Upscaler` (the runtime's) and `vdsr.Model`, resolved on first use (PEP 562)."""
    if name == "Upscaler":
        from vdsr.runtime.upscaler import Upscaler  # the facade: the root layer itself never uses the runtime

        return Upscaler
    if name == "Model":
        from vdsr.model import Model  # looked up when used: importing any part of vdsr runs this module first

        return Model
    raise AttributeError(f"module 'vdsr' has no attribute {name!r}")
